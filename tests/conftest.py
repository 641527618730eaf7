import logging

import structlog

# Tests run the protocol core in-process; keep its log lines out of the test output.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
