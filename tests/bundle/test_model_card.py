"""What the bundle's model card and metadata say about the shipped generator is what
``models/model_config.json`` (the one record of the architecture) builds."""

from __future__ import annotations

import ast
import json
import re

from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.models.networks import ResnetGenerator


def test_model_card_states_the_configured_generator(shipped_architecture):
    card = (bundle_path() / "docs" / "README.md").read_text()
    call = re.search(r"`napari_uspmie\.models\.networks\.(ResnetGenerator\(.*?\))`", card, re.DOTALL)
    assert call is not None
    stated = {k.arg: ast.literal_eval(k.value) for k in ast.parse(call.group(1), mode="eval").body.keywords}
    assert stated == shipped_architecture
    count = re.search(r"([\d,]+) parameters", card)
    assert count is not None
    built = ResnetGenerator(**shipped_architecture)
    assert int(count.group(1).replace(",", "")) == sum(p.numel() for p in built.parameters())


def test_metadata_channels_are_the_configured_ones(shipped_architecture):
    formats = json.loads((bundle_path() / "configs" / "metadata.json").read_text())["network_data_format"]
    assert formats["inputs"]["image"]["num_channels"] == shipped_architecture["in_channels"]
    assert formats["outputs"]["pred"]["num_channels"] == shipped_architecture["out_channels"]
