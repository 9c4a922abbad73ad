"""The one base of every error a user can fix: one line naming the file, key or value, exit 2."""


class BadInput(ValueError):
    """Bad config, data, checkpoint or command-line input; the message is the whole story."""
