"""The synthetic world: users, follow graph, tweets, visits and engagement with a hidden ground truth."""
