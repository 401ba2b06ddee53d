"""`shipledger topics create`: the deployment's one-shot topic step, on a real broker (Tansu)."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.topics import lease_topic
from tests.kit import SHIPLEDGER

pytestmark = pytest.mark.integration


def test_topics_create_makes_every_catalog_topic_and_repeats_safely(broker: str) -> None:
    prefix = f"topics-{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "SHIPLEDGER_TOPIC_PREFIX": prefix, "SHIPLEDGER_TOPIC_PARTITIONS": "3"}
    settings = Settings(topic_prefix=prefix)
    wanted = Topics.from_settings(settings).all()
    lease = lease_topic(settings)
    for _ in range(2):  # the second run finds them all and changes nothing
        done = subprocess.run(
            [SHIPLEDGER, "topics", "create", "--bootstrap", broker],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert done.stdout.split() == [*wanted, lease]
    listed = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=15).topics
    assert all(len(listed[name].partitions) == 3 for name in wanted)
    assert len(listed[lease].partitions) == 1  # one holder at a time


def test_topics_create_names_an_unreachable_broker() -> None:
    done = subprocess.run(
        [SHIPLEDGER, "topics", "create", "--bootstrap", "127.0.0.1:1"],
        env={**os.environ, "SHIPLEDGER_TOPIC_PREFIX": "nowhere."},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Error:" in done.stderr
