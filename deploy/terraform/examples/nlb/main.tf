# The seed 003 shape: a Network Load Balancer terminating TLS in front of the tasks, client IPs preserved.

terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = "us-east-1"
}

module "switchboard" {
  source = "../.."

  name               = "switchboard-nlb"
  vpc_id             = "vpc-0abc1234"
  public_subnet_ids  = ["subnet-0a1", "subnet-0b2"]
  private_subnet_ids = ["subnet-0c3", "subnet-0d4"]
  certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  image              = "123456789012.dkr.ecr.us-east-1.amazonaws.com/switchboard:1.0.0"

  load_balancer_type = "network"
  client_cidr_blocks = ["0.0.0.0/0"]

  # Backends in these groups may call the management API (boto3 apigatewaymanagementapi, endpoint_url below).
  management_security_group_ids = ["sg-0123456789abcdef0"]
}

output "websocket_url" {
  value = module.switchboard.websocket_url
}

output "management_endpoint" {
  value = module.switchboard.management_endpoint
}
