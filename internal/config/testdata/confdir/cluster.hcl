# Test cluster: three nodes on two networks; node3 has no replication link.
cluster "test" {
  network "default" {}
  network "replication" {}

  node "node1" {
    addresses = { default = "198.18.0.1", replication = "198.18.1.1" }
  }
  node "node2" {
    addresses = { default = "198.18.0.2", replication = "198.18.1.2" }
  }
  node "node3" {
    addresses = { default = "198.18.0.3" }
  }
}
