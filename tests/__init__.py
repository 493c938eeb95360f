import pytest

# The shared checks report their failures as well as the tests that call them do.
pytest.register_assert_rewrite("tests.clip_checks", "tests.live_stack")
