"""Planning: a dataset fingerprint -> a complete workflow config with a reason for every choice.

    from medseg.plan import fingerprint_dataset, plan_workflow
    plan = plan_workflow(fingerprint_dataset("dataset.json"), {"modality": "CT"}, minutes=10)
    plan.config      # a complete workflow config (validates as medseg.config.WorkflowConfig)
    plan.table()     # (setting, value, set by, reason) per decision
"""

from medseg.plan.fingerprint import CaseFingerprint, DatasetFingerprint, fingerprint_case, fingerprint_dataset
from medseg.plan.planner import (
    Budget,
    Decision,
    Plan,
    measure_throughput,
    plan_dataset,
    plan_workflow,
    read_workflow,
    workflow_for,
)

__all__ = ["Budget", "CaseFingerprint", "DatasetFingerprint", "Decision", "Plan", "fingerprint_case",
           "fingerprint_dataset", "measure_throughput", "plan_dataset", "plan_workflow", "read_workflow",
           "workflow_for"]
