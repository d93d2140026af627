"""The base every part stands on: the error tree, the Redis link, the background tick loop."""
