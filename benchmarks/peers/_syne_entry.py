"""The script Syne Tune's local backend starts for each trial: its config (a JSON file) onto the same objective."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `benchmarks`
    from benchmarks.peers._adapter import prepare_process

    prepare_process()
    from syne_tune import Reporter
    from syne_tune.constants import ST_CONFIG_JSON_FNAME_ARG
    from syne_tune.utils.config_as_json import add_config_json_to_argparse, load_config_json

    from benchmarks.peers._trial import run_trial

    parser = argparse.ArgumentParser()
    add_config_json_to_argparse(parser)
    args, _ = parser.parse_known_args()
    config = load_config_json(vars(args))
    trial_id = Path(vars(args)[ST_CONFIG_JSON_FNAME_ARG]).parent.name  # the backend's folder for this trial
    reporter = Reporter()
    run_trial(json.loads(config["peer_context"]), config, f"syne-{trial_id}", lambda metrics: reporter(**metrics))
