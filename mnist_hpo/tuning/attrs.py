"""The names of the Optuna study and trial attributes mnist-hpo writes and reads, each named once here.

Every module reads and writes them through these constants (tests/tuning/test_attrs.py refuses a
bare name elsewhere). The values are the stored keys: a user's own code, optuna-dashboard and
studies made by earlier versions read them, so a value is never changed without also reading the
old one. Optuna's own keys are prefixed ``OPTUNA_``: Optuna writes them, mnist-hpo only reads (and
passes on) them. Plain constants, no imports: every layer that may import the search reads them.
"""

from __future__ import annotations

# Study user attributes (study.user_attrs), written by mnist-hpo.
SETTINGS_ATTR = "mnist_hpo"  # the StudySettings as a dict (settings.StudySettings.save)
DATA_SOURCE_ATTR = "data_source"  # one line naming the data and its digest (the first worker, or `study create`)
STOPPED_ATTR = "stopped"  # why a stop rule stopped the study (one line); None once lifted (stopping.py)
LIFTED_ATTR = "stops_lifted"  # earlier stops, lifted by a later `search` (stopping.py)
STOP_RULES_FROM_ATTR = "stop_rules_from"  # own finished trials when the stop rules were last set (stopping.py)
WARM_START_ATTR = "warm_start"  # {"study": source, "copied": {"COMPLETE": n, "PRUNED": m}} (copies.py)
TEST_ACCURACY_ATTR = "test_accuracy"  # {trial number: test accuracy} measured by `best --test` (commands/status.py)

# Study system attributes (storage.get_study_system_attrs), written by mnist-hpo.
CREATING_ATTR = "mnist_hpo:creating"  # the process queueing the study's budget, while it does (_budget.py)

# Trial user attributes (trial.user_attrs), written by mnist-hpo; a copied trial keeps them (copies.py).
MODEL_SPEC_ATTR = "model_spec"  # the network's spec, what build_model reads (objective.py)
PARAMETERS_ATTR = "parameters"  # the network's parameter count (objective.py)
MULT_ADDS_ATTR = "mult_adds"  # the network's mult-adds per image (objective.py)
DEVICE_ATTR = "device"  # the torch device the trial trained on, with the GPU's name (objective.py)
SEED_ATTR = "seed"  # the trial's training seed (objective.py)
TRAIN_CONFIG_ATTR = "train_config"  # the TrainConfig as a dict, what `train --from-study` reads (objective.py)
VERSIONS_ATTR = "versions"  # the library versions the trial ran with (objective.py)
EPOCHS_RUN_ATTR = "epochs_run"  # epochs trained so far (objective.py, every epoch)
LEARNING_CURVE_ATTR = "learning_curve"  # [{"epoch", "train_loss", "val_accuracy"}, ...] (objective.py, every epoch)
IMAGES_PER_S_ATTR = "images_per_s"  # training throughput of the last epoch (objective.py)
SECONDS_ATTR = "seconds"  # training time (objective.py)
BEST_EPOCH_ATTR = "best_epoch"  # the epoch whose weights were kept (objective.py)
TRIAL_STOPPED_ATTR = "stopped"  # why the trial ended early: pruned, diverged, over --max-params (objective.py)
RESUMED_FROM_ATTR = "resumed_from"  # {"trial", "epoch"}: the dead trial's training state a retry continued (objective.py)
RESUME_FAILED_ATTR = "resume_failed"  # why a retry started over from epoch 1 (objective.py)
RUNGS_ATTR = "mo_asha_rungs"  # {"1": validation accuracy after epoch 1, "3": ...} (pruners.py, for mo_asha.py)
WORKER_ATTR = "worker"  # the worker's label (_engine.py)
GPU_ATTR = "gpu"  # the GPU the worker was given (_engine.py)
COPIED_ATTR = "copied_from"  # {"study", "trial"}: the trial is a warm start's copy (copies.py)
PUBLISHED_BASELINE_ATTR = "published_baseline"  # True: the trial trains the published configuration (_budget.py)
PBT_SEGMENT_ATTR = "pbt_segment"  # {"member", "generation", "first_epoch", "last_epoch", "source", "donor"} (pbt.py)
REPLACES_ATTR = "replaces"  # the number of the failed trial a fresh trial replaces (_retries.py)
RETRY_OF_ATTR = "retry_of"  # the number of the dead trial a retry re-runs (_retries.py)
# Ours, not Optuna's OPTUNA_RETRY_HISTORY_ATTR below, though key and list are the same: the numbers of
# the trials a retry re-runs, oldest first, copied by _retries.requeue into the user attributes of the
# retry it queues, where people see it and the objective reads it (to resume, and to clean up).
RETRY_HISTORY_ATTR = "retry_history"
FAIL_REASON_ATTR = "fail_reason"  # why mnist-hpo failed the trial: its error, an interrupt, a storage fault, its worker gone

# Trial system attributes (trial.system_attrs), written by mnist-hpo.
HEARTBEAT_ATTR = "mnist_hpo:heartbeat"  # journal and gRPC storages: the last heartbeat, seconds since the epoch (_retries.py)
OWNER_ATTR = "mnist_hpo:owner"  # SQL storages: the process that took the trial (_owner.this_process), set by the take
FAIL_REASON_SYSTEM_ATTR = "fail_reason"  # FAIL_REASON_ATTR again, as a system attribute (_engine.py, _display.py)

# Trial system attributes Optuna writes; mnist-hpo reads them and passes them on to a retry.
OPTUNA_RETRY_HISTORY_ATTR = "retry_history"  # RetryFailedTrialCallback: the trials a retry re-runs, oldest first
OPTUNA_FAILED_TRIAL_ATTR = "failed_trial"  # RetryFailedTrialCallback: the first trial of the retries
OPTUNA_FIXED_PARAMS_ATTR = "fixed_params"  # study.enqueue_trial: the parameters a queued trial is given
