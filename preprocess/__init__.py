"""Turn official video datasets (or a generated one) into the dataset folder the pipelines read.

Commands (each writes the format of docs/ARCHITECTURE.md section 1):

    python -m preprocess.ucf101 SRC --lists LISTS_DIR --out OUT [--split 1]
    python -m preprocess.kinetics400 SRC --annotations ANN_DIR --out OUT
    python -m preprocess.kinetics400 ... --shard K/N   then   ... --merge     (also ucf101; shards.py)
    python -m preprocess.synthetic --out OUT [--classes N --per-class M --seed S]
    python -m preprocess.splits OUT --per-class N --seeds 0 1 2 [--sampling category-wise]
"""


class PreprocessError(Exception):
    """A user error (missing folder, malformed list file...): the CLIs print it as one line, exit 2."""
