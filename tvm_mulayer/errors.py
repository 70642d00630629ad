"""The one exception type users see: a message that says what was wrong and what to do."""


class MulayerError(Exception):
    """Bad input or an unsatisfiable request; the CLI prints it as one line and exits 2."""
