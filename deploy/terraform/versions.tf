terraform {
  # 1.5: `check` blocks and preconditions are used; nothing newer is needed.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.40: security groups on Network Load Balancers and the aws_vpc_security_group_*_rule resources.
      version = ">= 5.40, < 7.0"
    }
  }
}
