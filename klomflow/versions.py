"""Code versions that enter the rules' params (docs/reruns.md, "Code versions").

Snakemake reruns a job when its params change, not when a module of the
package does; so a fix that can change results bumps the version covering it.
Kept apart from the code they version so that planning the DAG never imports
torch. tests/test_versions_guard.py fails when the code a version covers changed while
the version did not (tests/versions_guard.py finds that code; docs/reruns.md).
"""

# Bump when a change can change trained weights or their logits (klomflow/training/loop.py,
# klomflow/training/models.py, klomflow/data/datasets.py, klomflow/jobs/runs.py): it enters
# the training (and so the unlearning) rules' params, and Snakemake retrains.
# 2: logits in float32 on CUDA (were bfloat16).
# 3: CIFAR-10 inputs normalised as the published benchmark's (std 0.2023/0.1994/0.2010).
TRAINING = "3"

# Bump when a change can change which points a derived forget set holds
# (klomflow/forget_sets/, klomflow/jobs/forget_sets.py, the margin datamodel): it enters
# their rules' params.
FORGET_SETS = "1"

# Bump when a change can change a privacy file (klomflow/metrics/privacy/,
# klomflow/reporting/privacy_tables.py): it enters the privacy rules' params. Kept here so
# that provenance need not import scipy.
# 2: the accuracy ratios use margins on both sides when either lacks logits; the reference row
#    uses the methods' number of held-out oracles (n_originals) when there are more.
PRIVACY = "2"
