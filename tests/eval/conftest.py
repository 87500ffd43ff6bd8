import pytest

from train.helpers import shared_data_cache


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return shared_data_cache(tmp_path_factory)
