"""Scoring one genome: the evaluator, its assembly from a workload (device, model, calibration, data), accuracy
metrics, racing and the result record."""
