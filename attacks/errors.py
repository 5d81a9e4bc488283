"""Errors shared by the attack adapters."""


class AttackUnavailable(RuntimeError):
    """An attack's optional library is not installed; the message says how to install it.

    A suite catches this to mark the attack as skipped rather than failed.
    """
