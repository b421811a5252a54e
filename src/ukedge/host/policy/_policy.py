"""The node's signature policy file (``ukedge host serve --policy FILE``): which keys must have
signed which images.

::

    # Images no rule matches: "allow" (the default), "warn" or "reject".
    unmatched = "reject"

    [[rule]]
    registry = "hub.example.org:5000"    # glob; "*" is any registry, "" a local image
    repository = "apps/*"                # glob over the repository path
    keys = ["keys/ci-2026.pub", "keys/ci-2027.pub"]   # PEM public keys, relative to this file
    require = "any"                      # "any" key's signature suffices (rotation), or "all"
    unsigned = "reject"                  # no valid signature: "reject" or "warn" (and run)

The first rule that matches decides. Keys are read once, when the policy loads: a node checks
offline, and a key file edited later needs a restart of the agent to count.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ukedge.errors import InputFileError, UsageError
from ukedge.image import PublicKey, parse_reference

__all__ = ["OnUnsigned", "Policy", "Rule", "load_policy"]


class OnUnsigned(enum.StrEnum):
    REJECT = "reject"
    WARN = "warn"
    ALLOW = "allow"  # only for ``unmatched``


@dataclass(frozen=True)
class Rule:
    registry: str
    repository: str
    keys: tuple[PublicKey, ...]
    require_all: bool
    unsigned: OnUnsigned
    #: Position in the file, for messages and the verdict cache.
    index: int

    def matches(self, registry: str, repository: str) -> bool:
        return fnmatch.fnmatchcase(registry, self.registry) and fnmatch.fnmatchcase(
            repository, self.repository
        )

    def describe(self) -> str:
        return f"rule {self.index + 1} ({self.registry or '(local)'}/{self.repository})"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    unmatched: OnUnsigned = OnUnsigned.ALLOW
    source: str = ""
    #: Hash of the file's bytes and keys: a changed policy never reuses a cached verdict.
    fingerprint: str = ""

    def rule_for(self, image: str) -> Rule | None:
        """The rule that decides for ``image`` (``host/repo:tag``, or a local ``repo:tag``)."""
        ref = parse_reference(image)
        for rule in self.rules:
            if rule.matches(ref.registry or "", ref.repository):
                return rule
        return None


def _choice(path: str, field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputFileError(path, field, f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _rule(path: Path, index: int, doc: Any) -> Rule:
    where = f"rule[{index}]"
    if not isinstance(doc, dict):
        raise InputFileError(str(path), where, "must be a table ([[rule]])")
    unknown = set(doc) - {"registry", "repository", "keys", "require", "unsigned"}
    if unknown:
        raise InputFileError(str(path), f"{where}.{sorted(unknown)[0]}", "unknown field")
    for field in ("registry", "repository"):
        if not isinstance(doc.get(field, "*"), str):
            raise InputFileError(str(path), f"{where}.{field}", "must be a string (a glob)")
    files = doc.get("keys")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise InputFileError(
            str(path), f"{where}.keys", "must list one or more public key files (PEM)"
        )
    keys = []
    for name in files:
        key_path = (path.parent / name).resolve()
        try:
            data = key_path.read_bytes()
        except OSError as exc:
            raise InputFileError(
                str(path), f"{where}.keys", f"cannot read {key_path}: {exc.strerror}"
            ) from None
        try:
            keys.append(PublicKey.from_pem(data, str(key_path)))
        except UsageError as exc:
            raise InputFileError(str(path), f"{where}.keys", str(exc)) from None
    require = _choice(str(path), f"{where}.require", doc.get("require", "any"), ("any", "all"))
    unsigned = _choice(
        str(path), f"{where}.unsigned", doc.get("unsigned", "reject"), ("reject", "warn")
    )
    return Rule(
        registry=doc.get("registry", "*"),
        repository=doc.get("repository", "*"),
        keys=tuple(keys),
        require_all=require == "all",
        unsigned=OnUnsigned(unsigned),
        index=index,
    )


def load_policy(path: Path) -> Policy:
    """Read and check a policy file; every mistake names the field (InputFileError)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(str(path), None, f"cannot read it: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(str(path), None, f"not valid TOML: {exc}") from None
    unknown = set(doc) - {"rule", "unmatched"}
    if unknown:
        raise InputFileError(str(path), sorted(unknown)[0], "unknown field")
    unmatched = _choice(
        str(path), "unmatched", doc.get("unmatched", "allow"), ("allow", "warn", "reject")
    )
    rules_doc = doc.get("rule", [])
    if not isinstance(rules_doc, list):
        raise InputFileError(str(path), "rule", "must be an array of tables ([[rule]])")
    rules = tuple(_rule(path, i, r) for i, r in enumerate(rules_doc))
    digest = hashlib.sha256(raw)
    for rule in rules:
        for key in rule.keys:
            digest.update(key.key_id.encode())
    return Policy(rules, OnUnsigned(unmatched), str(path), digest.hexdigest())
