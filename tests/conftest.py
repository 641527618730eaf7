import logging
from collections.abc import Iterator

import pytest
import structlog

# Tests run the protocol core in-process; keep its log lines out of the test output.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@pytest.fixture(autouse=True, scope="session")
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' own per-user runtime dir (chatterd.httpauth.runtime_dir): the token and
    runtime files of the nodes they start (which inherit it), never those of other nodes of
    this user on the host, which an operator command without --http would otherwise find
    (chatterd.nodefind)."""
    path = tmp_path_factory.mktemp("xdg-runtime")
    path.chmod(0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(path))
        mp.delenv("CHATTER_HTTP_ADDR", raising=False)
        yield
