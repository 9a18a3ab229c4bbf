"""The one exception type for mistakes a user can fix (a wrong path, a broken file, no network)."""


class UserError(Exception):
    """An error caused by the user's input or environment, with one clear sentence to show.

    The message names the thing at fault and what to do about it. The CLI prints it without a
    traceback and the dashboard shows it in an error box.
    """
