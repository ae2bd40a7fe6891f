"""Entities: the keys features are joined on."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A user reading their feed.",
)
author = Entity(
    name="author",
    join_keys=["author_id"],
    value_type=ValueType.INT64,
    description="The user who posted a tweet (authors are users).",
)
tweet = Entity(
    name="tweet",
    join_keys=["tweet_id"],
    value_type=ValueType.INT64,
    description="A tweet, a ranking candidate.",
)
