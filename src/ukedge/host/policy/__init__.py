"""The node's signature policy: which keys must have signed which images, checked at pull and
before every start, offline."""

from ukedge.host.policy._gate import Decision, SignatureGate
from ukedge.host.policy._policy import OnUnsigned, Policy, Rule, load_policy

__all__ = ["Decision", "OnUnsigned", "Policy", "Rule", "SignatureGate", "load_policy"]
