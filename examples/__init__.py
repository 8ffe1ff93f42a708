"""The seeds' analytics as runnable Spark jobs on the beats' feeds (see ``examples/README.md``)."""
