import pytest

from tests.export.run_fixture import trained_results as _trained_results


@pytest.fixture(scope="session")
def trained_results(tmp_path_factory, demo_assets):
    return _trained_results(tmp_path_factory, demo_assets)
