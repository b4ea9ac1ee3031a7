# A root module deploying Switchboard into an existing VPC: `terraform init && terraform apply`.

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
  region = var.region
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "An existing VPC with public and private subnets."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more Availability Zones)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Private subnets with a NAT gateway or VPC endpoints."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate of the public hostname."
  type        = string
}

variable "image" {
  description = "The Switchboard image in ECR."
  type        = string
}

module "switchboard" {
  source = "../.."

  name               = "switchboard"
  vpc_id             = var.vpc_id
  public_subnet_ids  = var.public_subnet_ids
  private_subnet_ids = var.private_subnet_ids
  certificate_arn    = var.certificate_arn
  image              = var.image

  load_balancer_type          = "application" # the default; examples/nlb has the NLB
  target_connections_per_task = 5000

  # Redis: a replication group with one primary and a replica (Multi-AZ) by default. When one primary's memory or
  # pub/sub is the limit, shards (the tasks then run redis.mode cluster); or ElastiCache Serverless instead
  # (docs/deploy.md, "Which Redis"):
  # redis_cluster_mode = true
  # redis_shards       = 3
  # redis_serverless        = true
  # redis_serverless_engine = "valkey"

  # Integrations as in docs/integrations.md: the same Lambda-proxy events API Gateway sends.
  # (An http:// backend on a port other than 443 also needs an egress rule on module.switchboard.task_security_group_id.)
  environment = {
    SWITCHBOARD_INTEGRATIONS = "$connect=https://backend.example.com/connect,$disconnect=https://backend.example.com/disconnect"
  }

  tags = {
    project = "switchboard"
  }
}

output "websocket_url" {
  value = module.switchboard.websocket_url
}

output "management_endpoint" {
  value = module.switchboard.management_endpoint
}

output "management_token_secret_arn" {
  value = module.switchboard.management_token_secret_arn
}
