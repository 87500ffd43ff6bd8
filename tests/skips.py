"""Skip reasons shared by several test files, worded for someone running the suite."""

NO_TRITON = ("triton is not installed: the kernels' tests need it (pip install -e '.[triton]'; without a GPU its "
             "interpreter runs them, which `make test` sets up)")
