"""The signature policy on a real node: a signed image boots under the policy (and starts again
from its cached verdict), an unsigned one never boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.agent import running_agent
from kit.hub import run_hub
from ukedge.errors import SignatureError
from ukedge.host import InstanceState, run_request
from ukedge.image import ImageStore, generate_private_key
from ukedge.registry import RegistryClient, push, sign_image

pytestmark = pytest.mark.vm


def test_a_signed_image_boots_and_an_unsigned_one_does_not(
    tmp_path: Path, example_store: Path
) -> None:
    key = generate_private_key()
    (tmp_path / "ci.pub").write_bytes(key.public.pem())
    (tmp_path / "policy.toml").write_text('[[rule]]\nkeys = ["ci.pub"]\n')
    store = ImageStore(example_store)
    with run_hub(tmp_path / "hub", auth="off") as hub:
        push(store, "hello-c:1", f"{hub.host}/apps/hello:1")
        push(store, "hello-c:1", f"{hub.host}/apps/unsigned:1")
        with RegistryClient(hub.host, insecure=True, state_dir=tmp_path / "signer") as client:
            sign_image(client, "apps/hello", "1", key)
        policy = str(tmp_path / "policy.toml")
        with running_agent(tmp_path / "agent", "--hub", hub.host, "--policy", policy) as agent:
            client = agent.client()
            ran = client.run(
                run_request(image="apps/hello:1", name="hello", env={"HELLO_EXIT": "3"})
            )
            ended = client.wait(ran.id, timeout=300)
            assert ended.state is InstanceState.EXITED and ended.exit_code == 3
            again = client.start("hello")  # checked again, from the cached verdict
            assert client.wait(again.id, timeout=300).exit_code == 3
            with pytest.raises(SignatureError, match="unsigned"):
                client.run(run_request(image="apps/unsigned:1", name="nope"))
            assert [i.name for i in client.list(all_instances=True)] == ["hello"]
