# A configuration the terraform step can plan and apply offline: terraform_data is built into Terraform, so
# `terraform init` downloads nothing. The step passes the release as TF_VAR_* variables.

variable "service" {
  type = string
}

variable "environment" {
  type = string
}

# `version` is a name Terraform reserves: the step passes the release's version as `release_version`.
variable "release_version" {
  type = string
}

resource "terraform_data" "release" {
  input = "${var.service}/${var.environment}/${var.release_version}"
}

output "release" {
  value = terraform_data.release.output
}
