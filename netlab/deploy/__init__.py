"""Deployment tooling, apart from the lab's model, compiler and backends: the container images the
compose backend runs (netlab.deploy.images: ``harness image build``). Nothing in the core imports it
at module level; the compose backend builds an image on demand."""
