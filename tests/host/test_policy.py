"""The node's signature policy: the file, and the gate at pull and before every start, against
a real hub over HTTP. No machine boots here: every refusal comes before one would."""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.agent import AgentProcess, running_agent
from kit.hub import RunningHub, run_hub
from kit.registry import make_image, make_index
from ukedge.errors import InputFileError, SignatureError
from ukedge.host import InstanceState, NodeLayout, open_node, run_request
from ukedge.host.policy import OnUnsigned, load_policy
from ukedge.image import ImageStore, PrivateKey, generate_private_key, host_platform
from ukedge.registry import RegistryClient, push, sign_image


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="off") as running:
        yield running


def _key_files(tmp_path: Path, *names: str) -> dict[str, PrivateKey]:
    keys = {}
    for name in names:
        key = generate_private_key()
        (tmp_path / f"{name}.pub").write_bytes(key.public.pem())
        keys[name] = key
    return keys


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def _publish(hub: RunningHub, tmp_path: Path, name: str = "apps/web") -> tuple[str, str]:
    store = ImageStore(tmp_path / f"build-{name.replace('/', '-')}")
    # Real gzip layers: a run plans (unpacks) the image before the start that the gate refuses.
    make_image(
        store,
        "img:1",
        kernel=gzip.compress(os.urandom(4096)),
        app=gzip.compress(os.urandom(2048)),
    )
    ref = f"{hub.host}/{name}:1"
    return ref, push(store, "img:1", ref)


def _sign(hub: RunningHub, tmp_path: Path, ref: str, key: PrivateKey) -> None:
    repository, _, tag = ref.removeprefix(f"{hub.host}/").partition(":")
    with RegistryClient(hub.host, insecure=True, state_dir=tmp_path / "signer") as client:
        sign_image(client, repository, tag, key)


TRUST_CI = '[[rule]]\nkeys = ["ci.pub"]\n'
TRUST_OTHER = '[[rule]]\nkeys = ["other.pub"]\n'


def _journal(layout: NodeLayout) -> list[dict[str, object]]:
    path = layout.instances / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the file --------------------------------------------------------------------------------------


def test_a_policy_file_reads_with_its_rules_in_order(tmp_path: Path) -> None:
    _key_files(tmp_path, "ci", "ci-next")
    policy = load_policy(
        _policy(
            tmp_path,
            'unmatched = "reject"\n'
            '[[rule]]\nregistry = "hub.example.org:5000"\nrepository = "apps/*"\n'
            'keys = ["ci.pub", "ci-next.pub"]\nunsigned = "warn"\n'
            '[[rule]]\nrepository = "*"\nkeys = ["ci.pub"]\nrequire = "all"\n',
        )
    )
    assert policy.unmatched is OnUnsigned.REJECT
    first = policy.rule_for("hub.example.org:5000/apps/web:1")
    assert first is not None and first.index == 0 and len(first.keys) == 2
    assert first.unsigned is OnUnsigned.WARN and not first.require_all
    other = policy.rule_for("other.org/apps/web:1")
    assert other is not None and other.index == 1 and other.require_all
    assert other.unsigned is OnUnsigned.REJECT
    local = policy.rule_for("web:1")
    assert local is not None and local.index == 1


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('unmatched = "maybe"\n', "unmatched", "not one of"),
        ("colour = 1\n", "colour", "unknown field"),
        ('[[rule]]\nkeys = ["missing.pub"]\n', "rule[0].keys", "cannot read"),
        ('[[rule]]\nkeys = ["bad.pub"]\n', "rule[0].keys", "not a PEM public key"),
        ("[[rule]]\nkeys = []\n", "rule[0].keys", "one or more"),
        ('[[rule]]\nkeys = ["ci.pub"]\nunsigned = "allow"\n', "rule[0].unsigned", "not one of"),
        ('[[rule]]\nkeys = ["ci.pub"]\nrepo = "x"\n', "rule[0].repo", "unknown field"),
        ("[[rule]\n", None, "not valid TOML"),
    ],
)
def test_a_wrong_policy_names_the_field(
    tmp_path: Path, text: str, field: str | None, problem: str
) -> None:
    _key_files(tmp_path, "ci")
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(InputFileError) as caught:
        load_policy(_policy(tmp_path, text))
    assert caught.value.field == field
    assert problem in str(caught.value)


# -- pull and start --------------------------------------------------------------------------------


def test_unsigned_pull_is_refused_then_accepted_once_signed(
    hub: RunningHub, tmp_path: Path
) -> None:
    keys = _key_files(tmp_path, "ci")
    policy = load_policy(_policy(tmp_path, '[[rule]]\nrepository = "apps/*"\nkeys = ["ci.pub"]\n'))
    layout = NodeLayout.data_dir(tmp_path / "node")
    node = open_node(layout, policy=policy, hub=hub.host)
    ref, digest = _publish(hub, tmp_path)
    with pytest.raises(SignatureError) as caught:
        node.pull(ref)
    assert caught.value.digest == digest and caught.value.image == ref
    assert "unsigned" in caught.value.reason and digest in str(caught.value)
    assert node.images() == []  # nothing of it stays tagged
    [event] = [e for e in _journal(layout) if e["action"] == "refused"]
    assert event["image"] == ref and event["image_digest"] == digest
    assert "unsigned" in str(event["detail"])
    # The signature is pushed after the image: the next pull fetches it.
    _sign(hub, tmp_path, ref, keys["ci"])
    assert node.pull(ref).digest == digest
    decision = node.cache.gate.decide(ref, digest) if node.cache.gate else None
    assert decision is not None and decision.allowed and decision.verdict is not None
    assert decision.verdict.signers == (keys["ci"].public.key_id,)
    kept = layout.store / ".ukedge-signatures" / f"{digest.removeprefix('sha256:')}.json"
    assert kept.exists()
    node.remove_image(ref)  # the kept signatures go with the image
    assert not kept.exists()


def test_warn_lets_an_unsigned_image_in_and_says_so(
    hub: RunningHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _key_files(tmp_path, "ci")
    policy = load_policy(_policy(tmp_path, '[[rule]]\nkeys = ["ci.pub"]\nunsigned = "warn"\n'))
    node = open_node(NodeLayout.data_dir(tmp_path / "node"), policy=policy)
    ref, digest = _publish(hub, tmp_path)
    with caplog.at_level(logging.WARNING, logger="ukedge.host.policy"):
        assert node.pull(ref).digest == digest
    assert any(
        "runs unverified" in r.getMessage() and digest in r.getMessage() for r in caplog.records
    )


def test_an_untrusted_key_is_refused_and_a_rotation_accepts_either(
    hub: RunningHub, tmp_path: Path
) -> None:
    keys = _key_files(tmp_path, "old", "new", "stranger")
    ref, digest = _publish(hub, tmp_path)
    _sign(hub, tmp_path, ref, keys["stranger"])
    only_old = load_policy(_policy(tmp_path, '[[rule]]\nkeys = ["old.pub"]\n'))
    node = open_node(NodeLayout.data_dir(tmp_path / "a"), policy=only_old)
    with pytest.raises(SignatureError, match="none valid for a trusted key"):
        node.pull(ref)
    _sign(hub, tmp_path, ref, keys["new"])
    rotation = load_policy(_policy(tmp_path, '[[rule]]\nkeys = ["old.pub", "new.pub"]\n'))
    node = open_node(NodeLayout.data_dir(tmp_path / "b"), policy=rotation)
    assert node.pull(ref).digest == digest


def test_every_start_is_checked_offline_and_refused_before_anything_runs(
    hub: RunningHub, tmp_path: Path
) -> None:
    """The image was pulled under one policy; the node now trusts another key only. The check
    before the start reads the kept signatures (the hub is gone) and refuses; the run leaves
    no instance, and the journal names the image, digest and reason."""
    keys = _key_files(tmp_path, "ci", "other")
    ref, digest = _publish(hub, tmp_path)
    _sign(hub, tmp_path, ref, keys["ci"])
    layout = NodeLayout.data_dir(tmp_path / "node")
    trusting = load_policy(_policy(tmp_path, '[[rule]]\nkeys = ["ci.pub"]\n'))
    open_node(layout, policy=trusting).pull(ref)
    hub.stop()
    strict = load_policy(_policy(tmp_path, '[[rule]]\nkeys = ["other.pub"]\n'))
    node = open_node(layout, policy=strict)
    with pytest.raises(SignatureError) as caught:
        node.run(run_request(image=ref, name="web"))
    assert caught.value.digest == digest
    assert node.list(all_instances=True) == []
    refused = [e for e in _journal(layout) if e["action"] == "refused"]
    assert refused and refused[-1]["name"] == "web"
    assert refused[-1]["image"] == ref and refused[-1]["image_digest"] == digest
    assert "none valid for a trusted key" in str(refused[-1]["detail"])


def test_a_start_of_an_existing_instance_is_refused_and_its_record_kept(
    hub: RunningHub, tmp_path: Path
) -> None:
    """Created while the node trusted the signer; the policy changed; the start is refused
    before anything boots, the instance stays as it was, and the event names it."""
    keys = _key_files(tmp_path, "ci", "other")
    ref, digest = _publish(hub, tmp_path)
    _sign(hub, tmp_path, ref, keys["ci"])
    layout = NodeLayout.data_dir(tmp_path / "node")
    trusting = open_node(layout, policy=load_policy(_policy(tmp_path, TRUST_CI)))
    trusting.pull(ref)
    made = trusting.manager.create(run_request(image=ref, name="web"))
    strict = open_node(layout, policy=load_policy(_policy(tmp_path, TRUST_OTHER)))
    with pytest.raises(SignatureError, match="none valid for a trusted key"):
        strict.start("web")
    [kept] = strict.list(all_instances=True)
    assert kept.id == made.id and kept.state is InstanceState.CREATED and kept.pid is None
    [event] = [e for e in _journal(layout) if e["action"] == "refused"]
    assert event["id"] == made.id and event["name"] == "web"
    assert event["image"] == ref and event["image_digest"] == digest


def test_the_verdict_is_cached_until_the_signatures_change(hub: RunningHub, tmp_path: Path) -> None:
    keys = _key_files(tmp_path, "ci")
    ref, digest = _publish(hub, tmp_path)
    policy = load_policy(_policy(tmp_path, '[[rule]]\nkeys = ["ci.pub"]\nunsigned = "warn"\n'))
    node = open_node(NodeLayout.data_dir(tmp_path / "node"), policy=policy)
    node.pull(ref)
    gate = node.cache.gate
    assert gate is not None
    first = gate.decide(ref, digest)
    assert not first.verdict.ok if first.verdict else False
    assert gate.decide(ref, digest) is first
    _sign(hub, tmp_path, ref, keys["ci"])
    node.pull(ref)
    again = gate.decide(ref, digest)
    assert again is not first and again.verdict is not None and again.verdict.ok


def test_the_agent_process_refuses_an_unsigned_image_over_its_api(
    hub: RunningHub, tmp_path: Path
) -> None:
    """``ukedge host serve --policy``: the refusal crosses the wire with its class, and the
    node's journal names the image, the digest and the reason."""
    _key_files(tmp_path, "ci")
    policy = _policy(tmp_path, '[[rule]]\nkeys = ["ci.pub"]\n')
    ref, digest = _publish(hub, tmp_path)
    with running_agent(tmp_path / "agent", "--policy", str(policy)) as agent:
        client = agent.client()
        with pytest.raises(SignatureError, match=digest):
            client.pull(ref)
        with pytest.raises(SignatureError, match="unsigned"):
            client.run(run_request(image=ref, name="web"))
        assert client.list(all_instances=True) == []
        assert client.images() == []
    refused = [e for e in _journal(NodeLayout.data_dir(agent.data)) if e["action"] == "refused"]
    assert len(refused) == 2
    assert all(e["image"] == ref and e["image_digest"] == digest for e in refused)


def test_the_agent_refuses_a_policy_file_that_is_wrong(tmp_path: Path) -> None:
    policy = _policy(tmp_path, '[[rule]]\nkeys = ["missing.pub"]\n')
    agent = AgentProcess(tmp_path / "agent", 1, ["--policy", str(policy)], tmp_path / "log")
    with pytest.raises(RuntimeError, match=r"rule\[0\]\.keys"):
        agent.start()


def test_a_multi_platform_image_is_checked_as_the_index_and_as_the_manifest_that_starts(
    hub: RunningHub, tmp_path: Path
) -> None:
    """``ukedge sign`` signs an index with each platform's manifest; a node keeps the
    signatures of the index (checked at create) and of its platform's manifest (what the
    instance records, checked at every start), so a start under the same policy is allowed and
    one under a policy that no longer trusts the signer is refused."""
    keys = _key_files(tmp_path, "ci", "other")
    source = ImageStore(tmp_path / "source")
    digests = make_index(source, "img:1", gzipped=True)
    ref = f"{hub.host}/apps/multi:1"
    push(source, "img:1", ref)
    _sign(hub, tmp_path, ref, keys["ci"])
    layout = NodeLayout.data_dir(tmp_path / "node")
    trusting = open_node(layout, policy=load_policy(_policy(tmp_path, TRUST_CI)))
    trusting.pull(ref)
    made = trusting.manager.create(run_request(image=ref, name="web"))
    own = "amd64" if host_platform().architecture == "amd64" else "arm64"
    assert made.image_digest == digests[own]
    assert trusting.manager.image_check is not None
    trusting.manager.image_check(made.image, made.image_digest)  # what a start checks
    strict = open_node(layout, policy=load_policy(_policy(tmp_path, TRUST_OTHER)))
    with pytest.raises(SignatureError, match="none valid for a trusted key") as caught:
        strict.start("web")
    assert caught.value.digest == digests[own]
