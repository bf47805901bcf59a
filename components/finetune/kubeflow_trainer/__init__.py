"""Kubeflow Trainer v2 data used as-is: the TrainJob CRD and the stock ``torch-distributed`` ClusterTrainingRuntime."""
