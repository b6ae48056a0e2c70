module "pg" {
  kind            = "mirror"
  id              = 12
  nodes           = ["node1", "nod2"]
  default_primary = "node1"
}
