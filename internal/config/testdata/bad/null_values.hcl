module "pg" {
  kind  = "mirror"
  id    = null
  nodes = ["node1", null]
}
