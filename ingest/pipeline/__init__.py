"""The pipeline: the stages (receive, decode, write, acknowledge), the channels between
them, their periodic jobs, and the service that wires them."""
