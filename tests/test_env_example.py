"""`.env.example` documents the defaults: a `.env` copied from it as it is changes none of them."""

from __future__ import annotations

import os
import re

from lakehouse.config import PROJECT_ROOT, Settings


def test_env_example_states_the_code_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name in [n for n in os.environ if n.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    example = PROJECT_ROOT / ".env.example"
    assert Settings(_env_file=example).model_dump() == Settings(_env_file=None).model_dump()
    # the bracketed default in the comment above a key is the code's default
    text = example.read_text()
    stated = re.search(r"\[(\S+)\]\nLAKEHOUSE_SPARK_DRIVER_MEMORY=", text)
    assert stated and stated.group(1) == Settings(_env_file=None).spark_driver_memory
