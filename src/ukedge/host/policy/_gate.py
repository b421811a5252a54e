"""The node's signature gate: signatures fetched at pull, verdicts checked before every start.

At pull (network at hand) the gate fetches the image's signatures from its registry and keeps
them beside the store, one JSON file per manifest digest (``.ukedge-signatures/<hex>.json``,
written to a temporary name and renamed: a crash leaves the old list or the new one). Before
every start it verifies the kept signatures against the policy's keys, offline: no registry,
no network service. The verdict is cached per digest and rule, and reused while the
signatures file is unchanged (one ``stat``), so a start pays for the ECDSA check once.

What the gate refuses raises :class:`~ukedge.errors.SignatureError` naming the image, its
digest and the reason; a refused pull untags the image again (its blobs go with the next
sweep) and is announced as an event with the same three.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ukedge.errors import RegistryError, SignatureError
from ukedge.host._models import InstanceEvent, InstanceState
from ukedge.host.policy._policy import OnUnsigned, Policy, Rule
from ukedge.image import Signature, Verdict, digest_hex, parse_reference, verify_signatures

if TYPE_CHECKING:
    from ukedge.registry import RegistryClient

__all__ = ["Decision", "SignatureGate"]

log = logging.getLogger(__name__)

_DIR = ".ukedge-signatures"


@dataclass(frozen=True)
class Decision:
    """What the policy says about one image: allowed or not, and why."""

    image: str
    digest: str
    allowed: bool
    #: None when no rule matched.
    rule: Rule | None
    verdict: Verdict | None
    #: Why it was refused, or why it runs anyway (``warn``); empty when verified.
    reason: str = ""


class SignatureGate:
    def __init__(self, policy: Policy, store_root: Path) -> None:
        self.policy = policy
        self.root = store_root / _DIR
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        #: Told of each refused pull, as an event with an empty instance id.
        self.on_refused: Callable[[InstanceEvent], None] | None = None
        self._cache: dict[tuple[str, int], tuple[tuple[int, int] | None, Decision]] = {}
        self._lock = threading.Lock()

    # -- the kept signatures ---------------------------------------------------------------------

    def _path(self, digest: str) -> Path:
        return self.root / f"{digest_hex(digest)}.json"

    def keep(self, digest: str, signatures: list[Signature]) -> None:
        path = self._path(digest)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps([s.to_json() for s in signatures]))
        tmp.replace(path)

    def kept(self, digest: str) -> list[Signature]:
        try:
            doc = json.loads(self._path(digest).read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            log.warning("the kept signatures of %s do not parse; treated as none", digest)
            return []
        return [Signature.from_json(d) for d in doc]

    def _stamp(self, digest: str) -> tuple[int, int] | None:
        try:
            st = self._path(digest).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def forget(self, digests: set[str]) -> None:
        """Drop the kept signatures of manifests the store removed."""
        for digest in digests:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._path(digest).unlink()

    # -- deciding ----------------------------------------------------------------------------------

    def fetch(self, image: str, digest: str, client: RegistryClient) -> None:
        """Fetch and keep ``image``'s signatures (at pull); a registry that cannot be asked
        leaves what was kept before."""
        from ukedge.registry import fetch_signatures

        if self.policy.rule_for(image) is None:
            return
        repository = parse_reference(image).repository
        try:
            signatures = fetch_signatures(client, repository, digest)
        except RegistryError as exc:
            log.warning("cannot fetch the signatures of %s (%s); keeping what we had", image, exc)
            return
        self.keep(digest, signatures)

    def decide(self, image: str, digest: str) -> Decision:
        """The policy's decision for ``image`` at ``digest``, from the kept signatures only."""
        rule = self.policy.rule_for(image)
        if rule is None:
            mode = self.policy.unmatched
            reason = "" if mode is OnUnsigned.ALLOW else "no policy rule matches the image"
            return Decision(image, digest, mode is not OnUnsigned.REJECT, None, None, reason)
        key = (digest, rule.index)
        stamp = self._stamp(digest)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp and cached[1].image == image:
            return cached[1]
        verdict = verify_signatures(
            digest, self.kept(digest), list(rule.keys), require_all=rule.require_all
        )
        if verdict.ok:
            decision = Decision(image, digest, True, rule, verdict)
        else:
            allowed = rule.unsigned is OnUnsigned.WARN
            decision = Decision(image, digest, allowed, rule, verdict, verdict.reason)
        with self._lock:
            self._cache[key] = (stamp, decision)
        return decision

    def enforce(self, image: str, digest: str) -> Decision:
        """:meth:`decide`, raising SignatureError on a refusal and logging a warning for an
        image that runs unverified (``warn``)."""
        decision = self.decide(image, digest)
        where = decision.rule.describe() if decision.rule else "unmatched"
        if not decision.allowed:
            raise SignatureError(
                f"image {image} ({digest}) refused by the signature policy {self.policy.source} "
                f"({where}): {decision.reason}; sign it (`ukedge sign {image} --key KEY`) with a "
                "key the policy trusts, then pull it again",
                image=image,
                digest=digest,
                reason=decision.reason,
            )
        if decision.reason:
            said = decision.reason
            log.warning("image %s (%s) runs unverified (%s): %s", image, digest, where, said)
        return decision

    def check(self, image: str, digest: str) -> None:
        """The instance manager's check before every create and start."""
        self.enforce(image, digest)

    def refused_pull(self, exc: SignatureError) -> None:
        if self.on_refused is None:
            return
        self.on_refused(
            InstanceEvent(
                time=time.time(),
                id="",
                name="",
                state=InstanceState.CREATED,
                action="refused",
                image=exc.image,
                image_digest=exc.digest,
                detail=exc.reason,
            )
        )
