module "cron" {
  kind  = "light"
  id    = 40
  nodes = ["node1", "node2", "node1"]
}
