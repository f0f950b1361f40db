Write-Output "{\"ran\": \"powershell\"}"
