cluster "users" {
  network "default" {}
  node "node1" {
    addresses = { default = "198.18.0.1" }
  }

  user "alice" {
    role          = "superuser"
    password_hash = "hunter2"
  }
  user "bob" {
    role = "monitor"
  }
  user "bob" {
    role = "control"
  }
}
