source benchmarks/scripts/t2r_carry.sh
t2r_outputs th t2r-hybrid.tar
mkdir -p .cache && ln -sfn $K/t2r .cache/t2r; export PYTHONPATH=$PWD:$K/site
t2r_report 300 t2r-report-templates --student hybrid-b=$K/th-student --passkey-lengths 256,512,1024,2048 --passkey-templates code --passkey-examples 50 --decode-tokens 0
