"""Training: the training set from Feast, the multi-task engagement model, evaluation, MLflow."""
