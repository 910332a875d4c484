"""The one exception SASL code raises: a failure with its RFC 6120 §6.5 condition."""


class SASLFailure(Exception):
    """Authentication failed with ``condition`` (RFC 6120 §6.5).

    ``username`` is the (prepared) account it was for, once known; ``counts``
    is False for outcomes that are not a guess at a password (aborted,
    invalid-mechanism, encryption-required); every other failure is counted
    by the login throttle as a failed attempt.
    """

    def __init__(self, condition, text=None, username=None, counts=None):
        super().__init__(condition)
        self.condition = condition
        self.text = text
        self.username = username
        self.counts = counts if counts is not None else condition not in (
            "aborted", "invalid-mechanism", "encryption-required", "temporary-auth-failure")
