"""The paper's analyses on run folders (Fig. 1, 2, 5, 7); CLI: `python -m cmpl.analysis --help`.

Modules: `runs` reads metrics.jsonl and eval JSONs, `curves` the training curves (Fig. 2, val top-1),
`per_class` the per-class gaps (Fig. 1, 7), `temporal` the resampling rule and probe (Fig. 5),
`temporal_run` the probe on a checkpoint (imports the models and loaders), `report` the demo's README.
"""
from .runs import AnalysisError, EvalResult, load_eval, read_metrics, require_run, series

__all__ = ["AnalysisError", "EvalResult", "load_eval", "read_metrics", "require_run", "series"]
