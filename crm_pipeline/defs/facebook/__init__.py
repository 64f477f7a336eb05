"""Facebook domain: raw Graph API assets, their partitions, the hourly bulk-sync schedule."""
