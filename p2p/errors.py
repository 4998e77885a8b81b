"""The one exception type that means "the user asked for something invalid"."""


class UserError(Exception):
    """A mistake in a config, a command line or an input folder.

    The CLI prints its message as one line on stderr and exits with status 2;
    the message names the file/key and what was expected.
    """
