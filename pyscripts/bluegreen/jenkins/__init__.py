"""``bluegreen jenkins``: the multibranch job through python-jenkins."""
