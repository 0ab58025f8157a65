"""The published KLOM benchmark as a model source: KLOM-models and EasyDUB-dataset folders.

Both publish, for CIFAR-10 and ResNet-9, 200 original models (checkpoints,
logits, margins), 200 oracles per forget set (margins, logits) and the ten
forget sets' index files. `models.source: {layout: klom_models | easydub,
path: DIR}` makes the workflow read originals and oracles from such a folder
instead of training them (rules/train.smk); docs/published.md
describes both layouts, which layout.py follows.

Decisions where the sources leave a point open (each also in docs/published.md):
- KLOM-models' oracle root is `oracles/` on the dataset card and
  `oracle_models/` in the code that downloads it: both are accepted, chosen per
  forget set (the one that holds its files; `oracle_models/`, the newer, when
  both do, with a warning giving both files' SHA-256).
- Oracle and original margins come from the `*_margins_all.pt` files where
  present, else from per-model logits (`train_logits_{k}.pt`,
  `val_logits_{k}.pt`) and the dataset's labels.
- EasyDUB's `forget` files are taken to follow the forget file's order; where
  the forget file is unsorted and the originals' `forget` file of model 0
  exists, it settles the order once per forget set (it must equal model 0's
  `retain` margins at one of the two orders, with a clear gap to the other).
- Stored margins must follow from stored logits or weights within
  0.05 + 0.01·|margin| (EasyDUB computed each split in its own bfloat16 pass:
  about 1e-2 on correct files; other points or labels differ by whole units).
- Forget-set checksums are SHA-256 of the `.npy` file's bytes (the prefix the
  table below gives reproduces for sets 1-3 regenerated from their seeds);
  a mismatch is a warning, as the published files may be re-saved with
  another dtype; size, uniqueness and range are errors.
- Model ids are 0-based and read in numeric order (never lexicographic).
- Imported models have no seed: their checkpoints record the file, its
  SHA-256 and the model id; tables write seed -1 for them.

The path helpers (layout.py) import nothing heavy: rules/common.smk uses them to
list a job's input files while it plans the DAG.
"""
