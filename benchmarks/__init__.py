"""Developer tools that measure p2p (`make bench`); beside the package, not part of it or of `make test`."""
