from tests.support.stack import live_stack, private_stack

__all__ = ["live_stack", "private_stack"]
