"""The synthetic world: users, follows, tweets, visits, engagement, hidden truth."""
