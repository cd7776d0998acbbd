#Requires -Version 5.1
#Requires -RunAsAdministrator

<#
.SYNOPSIS
Builds the customer's plutus-sync lab on a Hyper-V host: an isolated switch, a web-shop VM
(Ubuntu) and an ERP VM (Windows Server 2022), both on differencing disks over master disks.

.DESCRIPTION
Creates, skipping whatever already exists:

  1. A virtual switch (default "PlutusLab"), Internal by default: the two VMs and the Hyper-V
     host can talk on it, nothing reaches a physical network, and no NAT is set up. With
     -SwitchType Private even the host is left out. On an Internal switch the host's own
     adapter "vEthernet (<switch>)" gets -HostAddress, so you can reach both VMs from it.
  2. For each VM a differencing disk (New-VHD -Differencing) whose parent is the master disk
     you name. The masters are never written: each VM writes only to its own small child
     disk, so a lab can be thrown away and rebuilt in seconds. The script marks the masters
     read-only, because writing to a parent (booting it, or opening it in another VM)
     silently corrupts every child made from it.
  3. The two VMs, Generation 2 by default, with fixed memory and processor counts, connected
     to the switch, automatic checkpoints off (they would stack more disks on the chain),
     Secure Boot set to the template each guest needs, and the Guest Service Interface on
     so Copy-VMFile can bring files (the public key, the install script) into the guests
     without a network.

It downloads nothing and installs nothing on the host: the Hyper-V role must be there, and the
master disks must be on the host already. It does not configure the guests either; at the end
it prints the static addressing to set inside them and the next steps.

The masters must be generalised images: a Windows Server 2022 master run through
"sysprep /generalize /oobe /shutdown", and an Ubuntu master whose /etc/machine-id is empty and
whose SSH host keys are removed (cloud images are made that way), so that clones do not share
identities. A Generation 2 VM needs a GPT/UEFI master; use -Generation 1 for MBR masters.

The lab has no internet: install the OpenSSH server capability into the Windows master before
generalising it, or give Install-PlutusSyncTarget.ps1 a -CapabilitySource.

.PARAMETER WebShopMasterVhdx
The master (parent) disk of the web-shop VM: an Ubuntu image. Must exist on this host.

.PARAMETER ErpMasterVhdx
The master (parent) disk of the ERP VM: a Windows Server 2022 image. Must exist on this host.

.PARAMETER VMPath
Folder for the VMs' configuration files and their differencing disks. Each VM gets its own
subfolder. Default C:\Hyper-V\PlutusLab.

.PARAMETER SwitchName
Name of the virtual switch. Default PlutusLab.

.PARAMETER SwitchType
Internal (default: VMs and host) or Private (VMs only).

.PARAMETER HostAddress
Address/prefix given to the host's adapter on an Internal switch. Default 10.0.0.1/24. Pass
an empty string to leave the adapter alone.

.PARAMETER WebShopVMName
Default plutus-webshop.

.PARAMETER ErpVMName
Default plutus-erp.

.PARAMETER WebShopAddress
The web shop's address/prefix inside the lab. Only used in the printed notes. Default 10.0.0.10/24.

.PARAMETER ErpAddress
The ERP's address/prefix inside the lab. Only used in the printed notes. Default 10.0.0.20/24.

.PARAMETER WebShopMemoryBytes
Memory of the web-shop VM in bytes, fixed. Default 2 GB. A multiple of 2 MB; 2GB is accepted.

.PARAMETER ErpMemoryBytes
Memory of the ERP VM in bytes, fixed. Default 4 GB. A multiple of 2 MB; 4GB is accepted.

.PARAMETER WebShopProcessorCount
Virtual processors of the web-shop VM. Default 2.

.PARAMETER ErpProcessorCount
Virtual processors of the ERP VM. Default 2.

.PARAMETER Generation
VM generation, 2 (UEFI, default) or 1 (BIOS). Must suit the masters. Fixed once a VM exists.

.PARAMETER Start
Start both VMs at the end.

.EXAMPLE
.\Deploy-PlutusInfra.ps1 -WebShopMasterVhdx D:\Masters\ubuntu-24.04.vhdx -ErpMasterVhdx D:\Masters\ws2022-sysprep.vhdx -WhatIf

Shows what would be created, and creates nothing.

.EXAMPLE
.\Deploy-PlutusInfra.ps1 -WebShopMasterVhdx D:\Masters\ubuntu-24.04.vhdx -ErpMasterVhdx D:\Masters\ws2022-sysprep.vhdx -VMPath D:\Labs\Plutus -Start

Builds the lab under D:\Labs\Plutus and starts both VMs.

.NOTES
Not exercised by plutus-sync's tests: it was only parse-checked (see README.md beside it).
Written for Windows PowerShell 5.1 with the Hyper-V module; keep the file ASCII. To throw the
lab away: Remove-VM for both VMs, delete -VMPath, Remove-VMSwitch; the masters stay as they are.
#>

[CmdletBinding(SupportsShouldProcess)]
param(
    [Parameter(Mandatory)]
    [ValidateNotNullOrEmpty()]
    [string] $WebShopMasterVhdx,

    [Parameter(Mandatory)]
    [ValidateNotNullOrEmpty()]
    [string] $ErpMasterVhdx,

    [ValidateNotNullOrEmpty()]
    [string] $VMPath = 'C:\Hyper-V\PlutusLab',

    [ValidateNotNullOrEmpty()]
    [string] $SwitchName = 'PlutusLab',

    [ValidateSet('Internal', 'Private')]
    [string] $SwitchType = 'Internal',

    [string] $HostAddress = '10.0.0.1/24',

    [ValidateNotNullOrEmpty()]
    [string] $WebShopVMName = 'plutus-webshop',

    [ValidateNotNullOrEmpty()]
    [string] $ErpVMName = 'plutus-erp',

    [string] $WebShopAddress = '10.0.0.10/24',

    [string] $ErpAddress = '10.0.0.20/24',

    # Plain numbers rather than 2GB/4GB literals, so that simpler parsers can check this file;
    # on the command line -ErpMemoryBytes 8GB works as usual.
    [long] $WebShopMemoryBytes = 2147483648,

    [long] $ErpMemoryBytes = 4294967296,

    [ValidateRange(1, 64)]
    [int] $WebShopProcessorCount = 2,

    [ValidateRange(1, 64)]
    [int] $ErpProcessorCount = 2,

    [ValidateRange(1, 2)]
    [int] $Generation = 2,

    [switch] $Start
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$OneMB = 1048576

function Write-Step([string] $Message) {
    Write-Host ''
    Write-Host "==> $Message" -ForegroundColor Cyan
}

function Write-Info([string] $Message) {
    Write-Host "    $Message"
}

function Split-AddressPrefix([string] $Value, [string] $What) {
    # '10.0.0.1/24' -> address and prefix length; a bare address is refused because the
    # prefix decides which addresses the lab can reach.
    $parts = $Value -split '/', 2
    $ip = $null
    $len = -1
    if ($parts.Count -ne 2 -or -not [System.Net.IPAddress]::TryParse($parts[0], [ref]$ip) -or
        -not [int]::TryParse($parts[1], [ref]$len) -or $len -lt 1 -or $len -gt 32) {
        throw "$What '$Value': expected an IPv4 address/prefix such as 10.0.0.1/24"
    }
    [pscustomobject]@{ Address = $parts[0]; PrefixLength = $len }
}

function Protect-MasterDisk {
    # A differencing disk records its parent's identity; any write to the parent breaks all of
    # its children. Read-only on the file stops an accidental boot or attach from writing.
    [CmdletBinding(SupportsShouldProcess)]
    param([string] $Path)
    $item = Get-Item -LiteralPath $Path
    $users = @(Get-VM | Get-VMHardDiskDrive | Where-Object { $_.Path -eq $item.FullName })
    foreach ($drive in $users) {
        Write-Warning "master $($item.FullName) is attached to VM '$($drive.VMName)' directly; detach it, or its writes will corrupt the lab's disks."
    }
    if ($item.IsReadOnly) {
        Write-Info "master $($item.FullName) is read-only"
    } elseif ($PSCmdlet.ShouldProcess($item.FullName, 'mark the master disk read-only')) {
        $item.IsReadOnly = $true
        Write-Info "marked master $($item.FullName) read-only"
    }
}

function New-LabVM {
    # One VM on its own differencing disk over $Master. Each step is skipped when its result
    # already exists; settings that can only change while the VM is off are left with a warning.
    [CmdletBinding(SupportsShouldProcess)]
    param(
        [string] $Name,
        [string] $Master,
        [long] $MemoryBytes,
        [int] $ProcessorCount,
        [string] $SecureBootTemplate
    )
    Write-Step "VM $Name"
    # New-VM -Path puts the VM's files into <VMPath>\<Name>; the disk goes beside them.
    $vmFolder = Join-Path $VMPath $Name
    $diskFolder = Join-Path $vmFolder 'Virtual Hard Disks'
    $disk = Join-Path $diskFolder "$Name.vhdx"

    if (Test-Path -LiteralPath $disk) {
        $vhd = Get-VHD -Path $disk
        if ([string]$vhd.VhdType -ne 'Differencing' -or $vhd.ParentPath -ne $Master) {
            Write-Warning "$disk exists but is not a differencing disk over $Master (type $($vhd.VhdType), parent '$($vhd.ParentPath)'); it is used as it is."
        } else {
            Write-Info "disk $disk exists (differencing over $Master)"
        }
    } elseif ($PSCmdlet.ShouldProcess($disk, "create differencing disk over $Master")) {
        if (-not (Test-Path -LiteralPath $diskFolder)) {
            $null = New-Item -ItemType Directory -Path $diskFolder
        }
        $null = New-VHD -Path $disk -ParentPath $Master -Differencing
        Write-Info "created differencing disk $disk"
    }

    $vm = Get-VM -Name $Name -ErrorAction SilentlyContinue
    if ($vm) {
        Write-Info "VM $Name exists"
    } elseif ($PSCmdlet.ShouldProcess($Name, "create Generation $Generation VM on $disk, switch $SwitchName")) {
        $vm = New-VM -Name $Name -Generation $Generation -MemoryStartupBytes $MemoryBytes `
            -VHDPath $disk -SwitchName $SwitchName -Path $VMPath
        Write-Info "created VM $Name"
    }
    if (-not $vm) {
        return
    }

    $isOff = ([string]$vm.State -eq 'Off')
    $memory = Get-VMMemory -VM $vm
    $needsSettings = ($vm.ProcessorCount -ne $ProcessorCount) -or $memory.DynamicMemoryEnabled -or
        ($memory.Startup -ne $MemoryBytes)
    if ($needsSettings) {
        if (-not $isOff) {
            Write-Warning "VM $Name is $($vm.State): processors and memory are changed only while it is off."
        } elseif ($PSCmdlet.ShouldProcess($Name, "set $ProcessorCount processors, $($MemoryBytes / $OneMB) MB fixed memory")) {
            # Fixed memory: a lab measured against the benchmarks should not change under load.
            Set-VM -VM $vm -ProcessorCount $ProcessorCount -StaticMemory -MemoryStartupBytes $MemoryBytes
            Write-Info "$ProcessorCount processors, $($MemoryBytes / $OneMB) MB memory"
        }
    } else {
        Write-Info "$ProcessorCount processors, $($MemoryBytes / $OneMB) MB memory"
    }

    # Automatic checkpoints would put one more disk on the chain at every start. (Hyper-V on
    # Windows Server 2016 has no such setting, hence the property test.)
    if ($vm.PSObject.Properties['AutomaticCheckpointsEnabled'] -and $vm.AutomaticCheckpointsEnabled -and $PSCmdlet.ShouldProcess($Name, 'turn automatic checkpoints off')) {
        Set-VM -VM $vm -AutomaticCheckpointsEnabled $false
        Write-Info 'automatic checkpoints off'
    }

    $adapter = @(Get-VMNetworkAdapter -VM $vm) | Select-Object -First 1
    if (-not $adapter) {
        if ($PSCmdlet.ShouldProcess($Name, "add a network adapter on $SwitchName")) {
            Add-VMNetworkAdapter -VM $vm -SwitchName $SwitchName
            Write-Info "network adapter added on $SwitchName"
        }
    } elseif ($adapter.SwitchName -ne $SwitchName) {
        if ($PSCmdlet.ShouldProcess($Name, "connect its network adapter to $SwitchName (was '$($adapter.SwitchName)')")) {
            Connect-VMNetworkAdapter -VMNetworkAdapter $adapter -SwitchName $SwitchName
            Write-Info "connected to $SwitchName"
        }
    } else {
        Write-Info "connected to $SwitchName"
    }

    if ($vm.Generation -eq 2) {
        # Ubuntu's boot loader is signed by the Microsoft UEFI CA, not by the Windows key that
        # Hyper-V offers by default: with the default template the Linux VM does not boot.
        $firmware = Get-VMFirmware -VM $vm
        if ([string]$firmware.SecureBoot -eq 'On' -and $firmware.SecureBootTemplate -eq $SecureBootTemplate) {
            Write-Info "Secure Boot on, template $SecureBootTemplate"
        } elseif (-not $isOff) {
            Write-Warning "VM $Name is $($vm.State): Secure Boot is set only while it is off."
        } elseif ($PSCmdlet.ShouldProcess($Name, "Secure Boot on with template $SecureBootTemplate")) {
            Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate $SecureBootTemplate
            Write-Info "Secure Boot on, template $SecureBootTemplate"
        }
        # Boot from the disk first: with the network adapter first, every start waits for a
        # PXE timeout on a switch that has no boot server.
        $first = @($firmware.BootOrder) | Select-Object -First 1
        if ($first -and [string]$first.BootType -eq 'Drive') {
            Write-Info 'boots from its disk first'
        } elseif (-not $isOff) {
            Write-Warning "VM $Name is $($vm.State): the boot order is set only while it is off."
        } elseif ($PSCmdlet.ShouldProcess($Name, 'boot from its disk first')) {
            $bootDisk = Get-VMHardDiskDrive -VM $vm | Select-Object -First 1
            Set-VMFirmware -VM $vm -FirstBootDevice $bootDisk
            Write-Info 'boots from its disk first'
        }
    }

    # Lets Copy-VMFile put the key and scripts into the guest with no network to the host
    # (Private switch). The service's name is the English one; on a localised host, enable
    # it in Hyper-V Manager under Integration Services instead.
    $guestService = Get-VMIntegrationService -VM $vm | Where-Object { $_.Name -eq 'Guest Service Interface' }
    if (-not $guestService) {
        Write-Warning "VM ${Name}: no integration service named 'Guest Service Interface' (localised host?); enable it by hand for Copy-VMFile."
    } elseif ($guestService.Enabled) {
        Write-Info 'Guest Service Interface on'
    } elseif ($PSCmdlet.ShouldProcess($Name, 'enable Guest Service Interface')) {
        Enable-VMIntegrationService -VMIntegrationService $guestService
        Write-Info 'Guest Service Interface on'
    }
}

# ---------------------------------------------------------------------------------------------
# 0. Checks that change nothing.
# ---------------------------------------------------------------------------------------------
if (-not (Get-Module -ListAvailable -Name Hyper-V)) {
    throw ('the Hyper-V PowerShell module is missing. Install the role first (it needs a restart): ' +
        'Install-WindowsFeature -Name Hyper-V -IncludeManagementTools -Restart on Windows Server, or ' +
        'Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All on Windows 10/11.')
}
Import-Module Hyper-V

foreach ($bytes in @($WebShopMemoryBytes, $ErpMemoryBytes)) {
    if ($bytes -lt 512 * $OneMB -or $bytes % (2 * $OneMB) -ne 0) {
        throw "memory $bytes bytes: Hyper-V wants at least 512 MB, in a multiple of 2 MB"
    }
}

$masters = @{}
foreach ($entry in @(@('WebShopMasterVhdx', $WebShopMasterVhdx), @('ErpMasterVhdx', $ErpMasterVhdx))) {
    if (-not (Test-Path -LiteralPath $entry[1] -PathType Leaf)) {
        throw "-$($entry[0]) $($entry[1]): no such file. This script downloads nothing: copy the master disk to this host first."
    }
    $masters[$entry[0]] = (Get-Item -LiteralPath $entry[1]).FullName
    if ($Generation -eq 2 -and [System.IO.Path]::GetExtension($entry[1]) -ne '.vhdx') {
        throw "-$($entry[0]) $($entry[1]): a Generation 2 VM boots from a .vhdx only; convert it or pass -Generation 1"
    }
}
if ($masters['WebShopMasterVhdx'] -eq $masters['ErpMasterVhdx']) {
    throw 'the two master disks are the same file: the web shop is Ubuntu, the ERP Windows Server 2022'
}

$hostIp = $null
if ($HostAddress -and $SwitchType -eq 'Internal') {
    $hostIp = Split-AddressPrefix $HostAddress '-HostAddress'
}
$webIp = Split-AddressPrefix $WebShopAddress '-WebShopAddress'
$erpIp = Split-AddressPrefix $ErpAddress '-ErpAddress'

# ---------------------------------------------------------------------------------------------
# 1. The isolated switch.
# ---------------------------------------------------------------------------------------------
Write-Step "Switch $SwitchName ($SwitchType)"
$switch = Get-VMSwitch -Name $SwitchName -ErrorAction SilentlyContinue
if ($switch) {
    if ([string]$switch.SwitchType -ne $SwitchType) {
        Write-Warning "switch $SwitchName exists as $($switch.SwitchType), not $SwitchType; it is left as it is."
    } else {
        Write-Info 'exists'
    }
    if ([string]$switch.SwitchType -eq 'External') {
        Write-Warning "switch $SwitchName is External: the lab is not isolated from the physical network."
    }
} elseif ($PSCmdlet.ShouldProcess($SwitchName, "create $SwitchType virtual switch")) {
    # No -NetAdapterName: an Internal or Private switch is bound to no physical adapter.
    $switch = New-VMSwitch -Name $SwitchName -SwitchType $SwitchType
    Write-Info "created (${SwitchType}: no physical adapter, no NAT)"
}

if ($hostIp) {
    $alias = "vEthernet ($SwitchName)"
    $hostAdapter = Get-NetAdapter -Name $alias -ErrorAction SilentlyContinue
    if (-not $hostAdapter) {
        Write-Info "host adapter '$alias' does not exist yet; run again after the switch is created to give it $HostAddress"
    } elseif (Get-NetIPAddress -InterfaceAlias $alias -IPAddress $hostIp.Address -ErrorAction SilentlyContinue) {
        Write-Info "host adapter '$alias' has $($hostIp.Address)"
    } elseif ($PSCmdlet.ShouldProcess($alias, "add address $HostAddress")) {
        $null = New-NetIPAddress -InterfaceAlias $alias -IPAddress $hostIp.Address -PrefixLength $hostIp.PrefixLength
        Write-Info "host adapter '$alias' has $HostAddress"
    }
}

# ---------------------------------------------------------------------------------------------
# 2. Master disks and VM folder.
# ---------------------------------------------------------------------------------------------
Write-Step 'Master disks'
Protect-MasterDisk $masters['WebShopMasterVhdx']
Protect-MasterDisk $masters['ErpMasterVhdx']

if (-not (Test-Path -LiteralPath $VMPath) -and $PSCmdlet.ShouldProcess($VMPath, 'create folder')) {
    $null = New-Item -ItemType Directory -Path $VMPath
}

# ---------------------------------------------------------------------------------------------
# 3. The two VMs.
# ---------------------------------------------------------------------------------------------
New-LabVM -Name $WebShopVMName -Master $masters['WebShopMasterVhdx'] -MemoryBytes $WebShopMemoryBytes `
    -ProcessorCount $WebShopProcessorCount -SecureBootTemplate 'MicrosoftUEFICertificateAuthority'
New-LabVM -Name $ErpVMName -Master $masters['ErpMasterVhdx'] -MemoryBytes $ErpMemoryBytes `
    -ProcessorCount $ErpProcessorCount -SecureBootTemplate 'MicrosoftWindows'

if ($Start) {
    Write-Step 'Starting'
    foreach ($name in @($WebShopVMName, $ErpVMName)) {
        $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
        if ($vm -and [string]$vm.State -ne 'Running' -and $PSCmdlet.ShouldProcess($name, 'start')) {
            Start-VM -VM $vm
            Write-Info "started $name"
        }
    }
}

# ---------------------------------------------------------------------------------------------
# 4. What to do inside the guests. There is no DHCP server on the switch: addresses are static.
# ---------------------------------------------------------------------------------------------
Write-Step 'Next steps inside the VMs (static addresses: the switch has no DHCP)'
$ipNote = ''
if ($hostIp) { $ipNote = " The host is $($hostIp.Address)." }
Write-Host @"

  Web shop ($WebShopVMName, Ubuntu): /etc/netplan/60-plutuslab.yaml, then 'sudo netplan apply'
  (check the interface name with 'ip link'; on Hyper-V it is usually eth0):

      network:
        version: 2
        ethernets:
          eth0:
            addresses: [$($webIp.Address)/$($webIp.PrefixLength)]

  and a name for the ERP in /etc/hosts, matching the url in /etc/plutus-sync/config.toml:

      $($erpIp.Address)  erp.plutus.local

  ERP ($ErpVMName, Windows Server 2022), in an elevated PowerShell:

      New-NetIPAddress -InterfaceAlias Ethernet -IPAddress $($erpIp.Address) -PrefixLength $($erpIp.PrefixLength)

  Then bring plutus-sync's public key and Install-PlutusSyncTarget.ps1 into the ERP VM
  (Copy-VMFile -Name $ErpVMName -SourcePath .\id_ed25519.pub -DestinationPath C:\plutus\id_ed25519.pub
  -CreateFullPath -FileSource Host, same for the script) and run there:

      powershell -ExecutionPolicy Bypass -File C:\plutus\Install-PlutusSyncTarget.ps1 ``
          -WebShopAddress $($webIp.Address) -PublicKeyPath C:\plutus\id_ed25519.pub -HostName erp.plutus.local -WhatIf

  then again without -WhatIf, and copy the known_hosts line it prints to the web shop.
  The lab has no internet: the OpenSSH server must be in the ERP master already, or pass
  -CapabilitySource.$ipNote

"@
