module "pg" {
  kind               = "mirror"
  id                 = 12
  nodes              = ["node1", "node2"]
  split_brain_winner = "default_primary"
}
