"""The one exception type for mistakes a user can fix; the CLI turns it into exit status 2."""


class UserError(Exception):
    """A problem with the user's input (paths, images, checkpoints, options).

    The message is one line that names the offending thing and says what to do.
    """
