"""Who may talk to lokal: shared peer tokens, and the bounded gates that keep any one kind of work from
taking the node down."""

from sidecar.security.limits import Gate, LimitReporter, Throttle
from sidecar.security.tokens import TOKEN_HEADER, PeerTokens, TokenFileError

__all__ = ["TOKEN_HEADER", "Gate", "LimitReporter", "PeerTokens", "Throttle", "TokenFileError"]
