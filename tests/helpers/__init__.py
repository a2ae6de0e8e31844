"""Code the tests share that is not a fixture: test files import it from here, never from another
test file or a conftest.py (which hold only fixtures and pytest hooks)."""
