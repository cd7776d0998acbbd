#Requires -Version 5.1
#Requires -RunAsAdministrator

<#
.SYNOPSIS
Prepares a Windows Server 2022 ERP host to receive plutus-sync's order files over SFTP.

.DESCRIPTION
Sets up the receiving end of plutus-sync on the ERP host, using the OpenSSH server that
ships with Windows (Win32-OpenSSH). In order:

  1. Installs the OpenSSH.Server capability if it is missing, sets the sshd service to
     start automatically and starts it (the first start creates sshd_config and the host keys).
  2. Firewall: adds a rule that lets TCP -Port in from -WebShopAddress only, and disables
     the capability's own "OpenSSH-Server-In-TCP" rule, which allows any address (and
     narrows that rule to -WebShopAddress too, so re-enabling it by mistake opens nothing).
  3. Creates the local account -AccountName: not an administrator, a random password that
     is never shown or stored (it logs on with its key only), password never expires. Its
     profile is created through the Windows profile API so that sshd finds the same home
     folder now and after the first logon.
  4. Writes <profile>\.ssh\authorized_keys holding exactly -PublicKey, restricted to
     -WebShopAddress (from=) and to no forwarding or terminal (restrict), with an ACL that
     Win32-OpenSSH accepts: owner Administrators, only SYSTEM, Administrators and the account
     have access, nothing inherited.
  5. Hardens %ProgramData%\ssh\sshd_config: Port, PubkeyAuthentication yes,
     PasswordAuthentication no (for every account: administrators who use SSH need keys
     too), AllowGroups for the local Administrators group and the group plutus-sync-sftp
     (which the account joins; nobody else may log in over SSH), and a "Match User" block
     for the account: ChrootDirectory (the inbox's parent folder), ForceCommand
     internal-sftp, AuthenticationMethods publickey, no forwarding, no terminal. The file is
     backed up first, checked with "sshd -t" after the edit (the backup is put back if the
     check fails), and sshd is restarted only when the file changed.
  6. Creates the inbox folder with its own ACL (nothing inherited): SYSTEM and Administrators
     full control, the account Modify on what it creates (it writes <name>.part, reads it
     back, renames it and may delete it), -ErpAccount Modify so the ERP can import and remove
     the files.
  7. Prints the line to put into plutus-sync's known_hosts, the host key's SHA256
     fingerprint to compare out of band, and the destination URL for plutus-sync's config.

Every step looks first and changes only what differs, so the script can be run again at any
time; -WhatIf shows what it would change and changes nothing.

What plutus-sync relies on in this server (Win32-OpenSSH as shipped with Windows Server 2022):
  - The built-in server reports itself as OpenSSH_for_Windows_8.1p1 ("ssh -V" on the host).
  - An SFTP rename is done with CreateHardLinkW, so it never overwrites an existing file.
    plutus-sync counts on that: it uploads <name>.part, reads it back, renames it to <name>,
    and treats a failed rename onto an existing name as "compare, maybe already delivered".
  - NTFS is case-insensitive: Order-1.json and order-1.json are the same file here.
  - fsync@openssh.com always answers OK on Windows, so plutus-sync reads each file back
    instead of trusting it; the account therefore needs read access to its own uploads.
  - An administrator's own authorized_keys is ignored (sshd reads
    %ProgramData%\ssh\administrators_authorized_keys for administrators instead), which is
    one more reason the upload account must not be an administrator.
  - A leading dot does not hide a file on Windows: the ERP must skip names ending in .part.

The chroot: the account sees the inbox's parent folder (C:\ERP for C:\ERP\inbox) as "/",
so plutus-sync's URL ends in /inbox, not /C:/ERP/inbox. Inside it the account can still read
and write wherever NTFS lets it: Windows gives Authenticated Users Modify on new folders made
directly under C:\ unless their ACL is changed, and the script warns when the parent is open
like that. Give the inbox a parent of its own if that folder holds more.

.PARAMETER WebShopAddress
Address of the web-shop server, or its network as address/prefix (10.0.0.10, 10.0.0.0/24).
Several may be given. Only these may reach sshd through the firewall, and the key is only
accepted from them. A prefix of /0 is refused.

.PARAMETER PublicKey
The text of plutus-sync's public key (the one line of /etc/plutus-sync/id_ed25519.pub).

.PARAMETER PublicKeyPath
A file holding that line, copied here from the web-shop server.

.PARAMETER InboxPath
The folder plutus-sync delivers into. Default C:\ERP\inbox. Its parent folder (C:\ERP) is the
account's chroot, so the inbox cannot be the root of a drive nor directly under it.

.PARAMETER AccountName
The local account plutus-sync logs in as. Default plutus-sync. At most 20 characters.

.PARAMETER Port
The TCP port sshd listens on and the firewall opens. Default 22.

.PARAMETER ErpAccount
The account the ERP's import runs as (a local account, DOMAIN\name, or a service such as
"NT SERVICE\ErpImport"). It gets Modify on the inbox so it can read and remove what it
imported. Without it, only SYSTEM, Administrators and the upload account have access: that
is enough for an import that runs as LocalSystem.

.PARAMETER HostName
The name or address plutus-sync uses to reach this host, written into the printed
known_hosts line and URL exactly as given (plutus-sync compares it literally). Default: this
host's own address on the route to the first -WebShopAddress.

.PARAMETER CapabilitySource
Where Add-WindowsCapability finds the OpenSSH.Server package when the host cannot reach
Windows Update (an isolated lab): a mounted Features on Demand image or a folder. Passed as
-Source with -LimitAccess.

.EXAMPLE
powershell -ExecutionPolicy Bypass -File .\Install-PlutusSyncTarget.ps1 -WebShopAddress 10.0.0.10 -PublicKeyPath .\id_ed25519.pub -WhatIf

Shows what would be done, and does nothing. Run it without -WhatIf next.

.EXAMPLE
.\Install-PlutusSyncTarget.ps1 -WebShopAddress 10.0.0.10 -PublicKeyPath .\id_ed25519.pub -ErpAccount 'ERP\svc-import' -HostName erp.plutus.local

Prepares the host, lets the ERP's import account remove imported files, and prints the
known_hosts line and URL for the name erp.plutus.local.

.EXAMPLE
.\Install-PlutusSyncTarget.ps1 -WebShopAddress 10.0.0.10 -PublicKey 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... plutus-sync@shop' -Port 2222

Key given as text, sshd moved to port 2222; the known_hosts line is then written [host]:2222.
The URL is sftp://plutus-sync@<host>:2222/inbox: the account is chrooted to C:\ERP.

.NOTES
Not exercised by plutus-sync's tests: it was only parse-checked (see README.md beside it).
Written for Windows PowerShell 5.1, which is what Windows Server 2022 has; keep the file ASCII.
#>

[CmdletBinding(SupportsShouldProcess, DefaultParameterSetName = 'KeyFile')]
param(
    [Parameter(Mandatory)]
    [ValidateScript({
        # Each element is checked on its own: an IP address, or address/prefix.
        $parts = $_ -split '/', 2
        $ip = $null
        if (-not [System.Net.IPAddress]::TryParse($parts[0], [ref]$ip)) {
            throw "'$_' is not an IP address or address/prefix"
        }
        if ($parts.Count -eq 2) {
            $max = 32
            if ($ip.AddressFamily -eq [System.Net.Sockets.AddressFamily]::InterNetworkV6) { $max = 128 }
            $len = -1
            if (-not [int]::TryParse($parts[1], [ref]$len) -or $len -lt 1 -or $len -gt $max) {
                throw "'$_': the prefix must be 1 to $max (a /0 would let everyone in)"
            }
        }
        $true
    })]
    [string[]] $WebShopAddress,

    [Parameter(Mandatory, ParameterSetName = 'KeyText')]
    [ValidateNotNullOrEmpty()]
    [string] $PublicKey,

    [Parameter(Mandatory, ParameterSetName = 'KeyFile')]
    [ValidateNotNullOrEmpty()]
    [string] $PublicKeyPath,

    [ValidatePattern('^[A-Za-z]:\\[^\\]')]
    [string] $InboxPath = 'C:\ERP\inbox',

    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$')]
    [string] $AccountName = 'plutus-sync',

    [ValidateRange(1, 65535)]
    [int] $Port = 22,

    [string] $ErpAccount,

    [string] $HostName,

    [string] $CapabilitySource
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# ---------------------------------------------------------------------------------------------
# Fixed places of the built-in OpenSSH server.
# ---------------------------------------------------------------------------------------------
$OpenSshBin      = Join-Path $env:SystemRoot 'System32\OpenSSH'
$SshdExe         = Join-Path $OpenSshBin 'sshd.exe'
$SshKeygenExe    = Join-Path $OpenSshBin 'ssh-keygen.exe'
$SshDataDir      = Join-Path $env:ProgramData 'ssh'
$SshdConfigPath  = Join-Path $SshDataDir 'sshd_config'
$HostKeyPubPath  = Join-Path $SshDataDir 'ssh_host_ed25519_key.pub'
# The firewall keeps the variable unexpanded; this is how the capability's own rule names it.
$SshdProgramRule = '%SystemRoot%\System32\OpenSSH\sshd.exe'
$OurRuleName     = 'PlutusSync-SFTP-In-TCP'
$DefaultRuleName = 'OpenSSH-Server-In-TCP'
$BlockBegin      = '# BEGIN plutus-sync'
$BlockEnd        = '# END plutus-sync'
# The group whose members (only the upload account) may log in besides administrators.
$SftpGroupName   = 'plutus-sync-sftp'

# What this script writes into sshd_config, with @NAME@ put in by Expand-SshdBlock. Kept as
# plain text so tests/it/windows_target.rs can read these two here-strings out of this file
# and run Debian's "sshd -t" on the result (PowerShell itself cannot run there).
$GlobalBlockTemplate = @'
@BEGIN@ (global): managed by Install-PlutusSyncTarget.ps1, replaced on each run
Port @PORT@
PubkeyAuthentication yes
PasswordAuthentication no
# Only administrators and the upload account's group may log in. AllowGroups rather than
# AllowUsers: with both, a user must match both, which would lock administrators out.
AllowGroups @ALLOWGROUPS@
@END@ (global)
'@
$MatchBlockTemplate = @'
@BEGIN@ (@USER@): managed by Install-PlutusSyncTarget.ps1, replaced on each run
Match User @USER@
    ChrootDirectory "@CHROOT@"
    ForceCommand internal-sftp
    AuthenticationMethods publickey
    PubkeyAuthentication yes
    PasswordAuthentication no
    AllowTcpForwarding no
    AllowAgentForwarding no
    X11Forwarding no
    PermitTunnel no
    PermitTTY no
# Ends the block above, so lines added after this one are not silently scoped to that user.
Match all
@END@ (@USER@)
'@

# Well-known SIDs rather than names: group names are translated on non-English Windows.
$SidSystem   = New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-18'
$SidAdmins   = New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-32-544'
$BroadSids   = @{
    'S-1-1-0'      = 'Everyone'
    'S-1-5-11'     = 'Authenticated Users'
    'S-1-5-32-545' = 'Users'
}
# sshd reads its files byte-wise: a UTF-8 byte order mark in front of the first keyword or
# key type makes that line unreadable, and Windows PowerShell 5.1 writes one by default.
$Utf8NoBom = New-Object System.Text.UTF8Encoding $false

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
function Write-Step([string] $Message) {
    Write-Host ''
    Write-Host "==> $Message" -ForegroundColor Cyan
}

function Write-Info([string] $Message) {
    Write-Host "    $Message"
}

function Invoke-Native {
    # Windows PowerShell 5.1 turns every stderr line of a native program into an error record,
    # and with ErrorActionPreference 'Stop' the first one would end the script. We want the
    # program's text and its exit code instead.
    param([string] $FilePath, [string[]] $ArgumentList)
    $saved = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $lines = & $FilePath @ArgumentList 2>&1 | ForEach-Object { "$_" }
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $saved
    }
    [pscustomobject]@{ ExitCode = $code; Output = (@($lines) -join [Environment]::NewLine) }
}

function ConvertTo-CanonicalNetwork([string] $Address) {
    # '10.0.0.5', '10.0.0.5/32', '10.0.0.0/24' and '10.0.0.0/255.255.255.0' (the form the
    # firewall hands back) become '10.0.0.5/32' or '10.0.0.0/24', so two rules can be compared.
    # Keywords such as 'Any' or 'LocalSubnet' come back unchanged.
    $parts = $Address -split '/', 2
    $ip = $null
    if (-not [System.Net.IPAddress]::TryParse($parts[0], [ref]$ip)) { return $Address }
    $bytes = $ip.GetAddressBytes()
    $prefix = 8 * $bytes.Length
    if ($parts.Count -eq 2) {
        $mask = $null
        if ($parts[1] -match '^\d+$') {
            $prefix = [int]$parts[1]
        } elseif ([System.Net.IPAddress]::TryParse($parts[1], [ref]$mask)) {
            $prefix = 0
            foreach ($b in $mask.GetAddressBytes()) {
                $prefix += ([Convert]::ToString($b, 2) -replace '0', '').Length
            }
        } else {
            return $Address
        }
    }
    for ($i = 0; $i -lt $bytes.Length; $i++) {
        $keep = [Math]::Max(0, [Math]::Min(8, $prefix - 8 * $i))
        $bytes[$i] = $bytes[$i] -band ((0xFF -shl (8 - $keep)) -band 0xFF)
    }
    '{0}/{1}' -f (New-Object System.Net.IPAddress (, $bytes)), $prefix
}

function Get-AclSignature($Acl) {
    # A comparable summary of an ACL: owner, whether inheritance is blocked, and each rule.
    # Comparing SDDL strings instead would report a change on every run, because Windows adds
    # the auto-inherited flag when it stores a DACL.
    $owner = $Acl.GetOwner([System.Security.Principal.SecurityIdentifier]).Value
    $rules = $Acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]) |
        ForEach-Object {
            '{0}|{1}|{2}|{3}|{4}|{5}' -f $_.IdentityReference.Value, [int]$_.FileSystemRights,
                $_.InheritanceFlags, $_.PropagationFlags, $_.AccessControlType, $_.IsInherited
        } | Sort-Object
    "owner=$owner;protected=$($Acl.AreAccessRulesProtected);" + (@($rules) -join ';')
}

function Set-ExactAcl {
    # Gives $Path exactly this owner and these allow rules, with inheritance from the parent
    # cut off. Returns $true when the ACL differed. Win32-OpenSSH rejects an authorized_keys
    # file that anyone but SYSTEM, Administrators and the account may write, and ACEs inherited
    # from C:\ or C:\Users are exactly that kind of "anyone".
    [CmdletBinding(SupportsShouldProcess)]
    param(
        [Parameter(Mandatory)] [string] $Path,
        [Parameter(Mandatory)] [System.Security.Principal.SecurityIdentifier] $Owner,
        [Parameter(Mandatory)] [hashtable[]] $Rules
    )
    if (Test-Path -LiteralPath $Path -PathType Container) {
        $desired = New-Object System.Security.AccessControl.DirectorySecurity
    } else {
        $desired = New-Object System.Security.AccessControl.FileSecurity
    }
    $desired.SetOwner($Owner)
    $desired.SetAccessRuleProtection($true, $false)
    foreach ($r in $Rules) {
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule(
            $r.Sid,
            [System.Security.AccessControl.FileSystemRights]$r.Rights,
            [System.Security.AccessControl.InheritanceFlags]$r.Inherit,
            [System.Security.AccessControl.PropagationFlags]$r.Propagate,
            [System.Security.AccessControl.AccessControlType]::Allow)
        $desired.AddAccessRule($rule)
    }
    $current = Get-Acl -LiteralPath $Path
    if ((Get-AclSignature $current) -eq (Get-AclSignature $desired)) {
        return $false
    }
    if ($PSCmdlet.ShouldProcess($Path, 'replace owner and ACL (inheritance off)')) {
        Set-Acl -LiteralPath $Path -AclObject $desired
    }
    return $true
}

function New-RandomPassword {
    # Windows wants a password on every local account and checks it against the complexity
    # policy, so it gets 32 random characters from all four classes. It is never printed nor
    # stored: nobody needs it, since sshd only accepts the key for this account.
    $classes = @('ABCDEFGHJKLMNPQRSTUVWXYZ', 'abcdefghijkmnopqrstuvwxyz', '23456789', '!#%+-.:=?@_~')
    $alphabet = -join $classes
    # Bytes at or above $limit are thrown away so that every character is equally likely.
    $limit = 256 - (256 % $alphabet.Length)
    $rng = [System.Security.Cryptography.RandomNumberGenerator]::Create()
    $one = New-Object byte[] 1
    try {
        while ($true) {
            $chars = New-Object char[] 32
            for ($i = 0; $i -lt $chars.Length; $i++) {
                do { $rng.GetBytes($one) } while ($one[0] -ge $limit)
                $chars[$i] = $alphabet[$one[0] % $alphabet.Length]
            }
            $hasAll = $true
            foreach ($class in $classes) {
                if ($class.IndexOfAny($chars) -lt 0) { $hasAll = $false }
            }
            if ($hasAll) {
                $secure = New-Object System.Security.SecureString
                foreach ($c in $chars) { $secure.AppendChar($c) }
                $secure.MakeReadOnly()
                [Array]::Clear($chars, 0, $chars.Length)
                return $secure
            }
            [Array]::Clear($chars, 0, $chars.Length)
        }
    } finally {
        $rng.Dispose()
    }
}

function Get-ProfilePath([System.Security.Principal.SecurityIdentifier] $Sid) {
    # sshd takes a user's home folder from this registry entry. Without one it does not look in
    # C:\Users\<name> (older builds even used C:\Windows), which is why the profile is created
    # properly below rather than by making the folder by hand.
    $key = "HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList\$($Sid.Value)"
    $entry = Get-ItemProperty -LiteralPath $key -Name ProfileImagePath -ErrorAction SilentlyContinue
    if ($entry) { return [Environment]::ExpandEnvironmentVariables($entry.ProfileImagePath) }
    return $null
}

function New-UserProfile([System.Security.Principal.SecurityIdentifier] $Sid, [string] $Name) {
    # CreateProfile (userenv.dll) registers and creates the profile without a logon and without
    # the password. Making C:\Users\<name> by hand instead would go wrong on the first real logon:
    # Windows would find the folder taken, create C:\Users\<name>.<COMPUTER> as the profile, and
    # sshd would look for authorized_keys there from then on.
    if (-not ('PlutusSync.UserEnv' -as [type])) {
        Add-Type -Namespace PlutusSync -Name UserEnv -MemberDefinition @'
[DllImport("userenv.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern int CreateProfile(string pszUserSid, string pszUserName,
    System.Text.StringBuilder pszProfilePath, uint cchProfilePath);
'@
    }
    $buffer = New-Object System.Text.StringBuilder 260
    $hr = [PlutusSync.UserEnv]::CreateProfile($Sid.Value, $Name, $buffer, [uint32]$buffer.Capacity)
    $hex = '0x{0:X8}' -f $hr
    # 0x800700B7 is ERROR_ALREADY_EXISTS: a profile is registered already, which is what we want.
    if ($hr -ne 0 -and $hex -ne '0x800700B7') {
        throw "CreateProfile for ${Name}: failed with HRESULT $hex"
    }
}

function Test-DirectAdministrator([System.Security.Principal.SecurityIdentifier] $Sid) {
    # Direct members only. Membership through a nested (domain) group is not seen here; sshd
    # would see it, so do not put the account into any group that is itself an administrator.
    $members = @()
    try {
        $members = @(Get-LocalGroupMember -SID $SidAdmins.Value)
    } catch {
        # Get-LocalGroupMember fails outright when the group holds a SID that no longer
        # resolves; fall back to the older WinNT provider, which lists what it can.
        $group = [ADSI]"WinNT://./$((Get-LocalGroup -SID $SidAdmins.Value).Name),group"
        foreach ($m in @($group.Invoke('Members'))) {
            $bytes = [byte[]]$m.GetType().InvokeMember('objectSid', 'GetProperty', $null, $m, $null)
            $members += [pscustomobject]@{ SID = New-Object System.Security.Principal.SecurityIdentifier ($bytes, 0) }
        }
    }
    return [bool]($members | Where-Object { $_.SID -eq $Sid })
}

function Expand-SshdBlock([string] $Template, [hashtable] $Values) {
    # The template's lines with @NAME@ replaced; the file may have CRLF line ends on Windows.
    $text = $Template.Replace('@BEGIN@', $BlockBegin).Replace('@END@', $BlockEnd)
    foreach ($k in $Values.Keys) { $text = $text.Replace("@$k@", [string]$Values[$k]) }
    @($text -split "`r?`n")
}

function Update-SshdConfigText([string] $Text, [string[]] $GlobalBlock, [string[]] $MatchBlock) {
    # Returns the new file text. Our global settings go at the very top: sshd keeps the first
    # value it reads for a keyword, and global keywords must come before the first Match line.
    # Other active lines for those keywords outside any Match block are commented out (with a
    # marker), because Port lines add up rather than override. Our Match block goes last, since
    # a Match block runs until the next Match line or the end of the file.
    $nl = "`n"
    if ($Text.Contains("`r`n")) { $nl = "`r`n" }
    $managed = @('port', 'pubkeyauthentication', 'passwordauthentication')

    $kept = New-Object System.Collections.Generic.List[string]
    $inOurBlock = $false
    foreach ($line in ($Text -split "`r?`n")) {
        if ($line.StartsWith($BlockBegin)) { $inOurBlock = $true; continue }
        if ($inOurBlock) {
            if ($line.StartsWith($BlockEnd)) { $inOurBlock = $false }
            continue
        }
        $kept.Add($line)
    }
    while ($kept.Count -gt 0 -and $kept[$kept.Count - 1].Trim() -eq '') {
        $kept.RemoveAt($kept.Count - 1)
    }

    $global = $true
    for ($i = 0; $i -lt $kept.Count; $i++) {
        if ($kept[$i] -match '^\s*Match(\s|$)') { $global = $false }
        if ($global -and $kept[$i] -match '^\s*([A-Za-z]+)\s*[\s=]') {
            if ($managed -contains $Matches[1].ToLowerInvariant()) {
                $kept[$i] = '#plutus-sync# ' + $kept[$i]
            }
        }
    }

    $all = @($GlobalBlock) + @($kept) + @('') + @($MatchBlock)
    return ($all -join $nl) + $nl
}

# ---------------------------------------------------------------------------------------------
# 0. Checks that need nothing changed.
# ---------------------------------------------------------------------------------------------
if (-not [Environment]::Is64BitProcess) {
    # 32-bit PowerShell sees SysWOW64 instead of System32\OpenSSH, and the LocalAccounts
    # cmdlets are not available to it.
    throw 'run this from 64-bit PowerShell (C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe)'
}

if ($PSCmdlet.ParameterSetName -eq 'KeyFile') {
    $keyText = (Get-Content -LiteralPath $PublicKeyPath -Raw)
} else {
    $keyText = $PublicKey
}
$keyLines = @($keyText -split "`r?`n" | ForEach-Object { $_.Trim() } | Where-Object { $_ -and -not $_.StartsWith('#') })
if ($keyLines.Count -ne 1) {
    throw "the public key: expected exactly one key line, found $($keyLines.Count)"
}
# An OpenSSH public key line: type, base64 blob, optional comment. Options in front of it are
# added by this script, not taken from the input.
if ($keyLines[0] -notmatch '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa)\s+(AAAA[A-Za-z0-9+/]+=*)(\s+(.*))?$') {
    throw 'the public key: not an OpenSSH public key line (expected "ssh-ed25519 AAAA... comment")'
}
$keyType = $Matches[1]
$keyBlob = $Matches[3]
$keyComment = $AccountName
if ($Matches[5]) { $keyComment = $Matches[5] }
if ($keyType -ne 'ssh-ed25519') {
    Write-Warning "the key is $keyType; plutus-sync's documentation creates an ed25519 key."
}

$InboxPath = [System.IO.Path]::GetFullPath($InboxPath).TrimEnd('\')
$inboxParts = @($InboxPath -split '\\')
if ($inboxParts.Count -lt 3) {
    throw "$InboxPath`: the inbox must be in a folder of its own (C:\ERP\inbox): that folder becomes the account's chroot"
}
# The chroot is the inbox's parent; sshd_config would expand % and cannot quote a quote.
$ChrootPath = Split-Path -Parent $InboxPath
if ($ChrootPath.Contains('%') -or $ChrootPath.Contains('"')) {
    throw "$ChrootPath`: the inbox's parent becomes ChrootDirectory in sshd_config, which cannot hold % or a quote"
}

# Windows compares user names without regard to case; Win32-OpenSSH's documentation asks for
# lower case in sshd_config, and plutus-sync sends the name from its URL as written.
$sshUser = $AccountName.ToLowerInvariant()

$erpSid = $null
if ($ErpAccount) {
    try {
        $erpSid = (New-Object System.Security.Principal.NTAccount $ErpAccount).Translate(
            [System.Security.Principal.SecurityIdentifier])
    } catch {
        throw "-ErpAccount '$ErpAccount': no such account on this host or its domain"
    }
}

# ---------------------------------------------------------------------------------------------
# 1. OpenSSH server capability and the sshd service.
# ---------------------------------------------------------------------------------------------
Write-Step 'OpenSSH server'
$capability = Get-WindowsCapability -Online | Where-Object { $_.Name -like 'OpenSSH.Server~~~~*' } | Select-Object -First 1
if (-not $capability) {
    throw 'this Windows offers no OpenSSH.Server capability (Windows Server 2019 or later has it)'
}
if ([string]$capability.State -eq 'Installed') {
    Write-Info "$($capability.Name) is installed"
} elseif ($PSCmdlet.ShouldProcess($capability.Name, 'Add-WindowsCapability')) {
    $addArgs = @{ Online = $true; Name = $capability.Name }
    if ($CapabilitySource) {
        # An isolated host cannot reach Windows Update; -LimitAccess stops it from trying.
        $addArgs.Source = $CapabilitySource
        $addArgs.LimitAccess = $true
    }
    $added = Add-WindowsCapability @addArgs
    Write-Info "installed $($capability.Name)"
    if ($added.RestartNeeded) {
        Write-Warning 'Windows asks for a restart to finish installing OpenSSH; run this script again afterwards.'
    }
}

$service = Get-Service -Name sshd -ErrorAction SilentlyContinue
if (-not $service) {
    Write-Info 'the sshd service does not exist yet (it comes with the capability above)'
} else {
    if ([string]$service.StartType -ne 'Automatic') {
        if ($PSCmdlet.ShouldProcess('sshd', 'set start type Automatic')) {
            Set-Service -Name sshd -StartupType Automatic
            Write-Info 'sshd starts automatically'
        }
    } else {
        Write-Info 'sshd starts automatically'
    }
    if ([string]$service.Status -ne 'Running') {
        # The first start writes sshd_config from sshd_config_default and generates the host
        # keys: both are needed by the steps below.
        if ($PSCmdlet.ShouldProcess('sshd', 'start')) {
            Start-Service -Name sshd
            Write-Info 'sshd started'
        }
    } else {
        Write-Info 'sshd is running'
    }
}
if (Test-Path -LiteralPath $SshdExe) {
    Write-Info ("sshd.exe version {0} (Windows Server 2022's own build reports OpenSSH_for_Windows_8.1p1)" -f (Get-Item -LiteralPath $SshdExe).VersionInfo.ProductVersion)
}

# ---------------------------------------------------------------------------------------------
# 2. Firewall: the web-shop server only.
# ---------------------------------------------------------------------------------------------
Write-Step "Firewall: TCP $Port from $($WebShopAddress -join ', ') only"
$wantAddresses = (@($WebShopAddress | ForEach-Object { ConvertTo-CanonicalNetwork $_ }) | Sort-Object) -join ','

$ourRule = Get-NetFirewallRule -Name $OurRuleName -ErrorAction SilentlyContinue
if (-not $ourRule) {
    if ($PSCmdlet.ShouldProcess($OurRuleName, "create inbound rule TCP $Port from $($WebShopAddress -join ', ')")) {
        $null = New-NetFirewallRule -Name $OurRuleName -DisplayName 'plutus-sync: SFTP from the web shop' `
            -Description 'Created by Install-PlutusSyncTarget.ps1: lets the web-shop server reach sshd, and nobody else.' `
            -Direction Inbound -Action Allow -Protocol TCP -LocalPort $Port -RemoteAddress $WebShopAddress `
            -Program $SshdProgramRule -Profile Any -Enabled True
        Write-Info "created rule $OurRuleName"
    }
} else {
    $portFilter = $ourRule | Get-NetFirewallPortFilter
    $addressFilter = $ourRule | Get-NetFirewallAddressFilter
    $haveAddresses = (@($addressFilter.RemoteAddress | ForEach-Object { ConvertTo-CanonicalNetwork $_ }) | Sort-Object) -join ','
    $same = ([string]$ourRule.Enabled -eq 'True') -and ([string]$ourRule.Action -eq 'Allow') -and
        ([string]$ourRule.Direction -eq 'Inbound') -and ([string]$portFilter.Protocol -eq 'TCP') -and
        ((@($portFilter.LocalPort) -join ',') -eq [string]$Port) -and ($haveAddresses -eq $wantAddresses)
    if ($same) {
        Write-Info "rule $OurRuleName is as wanted"
    } elseif ($PSCmdlet.ShouldProcess($OurRuleName, "set to inbound TCP $Port from $($WebShopAddress -join ', ')")) {
        Set-NetFirewallRule -Name $OurRuleName -Enabled True -Direction Inbound -Action Allow -Protocol TCP `
            -LocalPort $Port -RemoteAddress $WebShopAddress -Program $SshdProgramRule -Profile Any
        Write-Info "updated rule $OurRuleName"
    }
}

# The capability's own rule lets port 22 in from any address. It is narrowed as well as
# disabled, so that whoever turns it back on later still opens nothing new.
$defaultRule = Get-NetFirewallRule -Name $DefaultRuleName -ErrorAction SilentlyContinue
if ($defaultRule) {
    $defaultAddresses = (@(($defaultRule | Get-NetFirewallAddressFilter).RemoteAddress | ForEach-Object { ConvertTo-CanonicalNetwork $_ }) | Sort-Object) -join ','
    if ([string]$defaultRule.Enabled -eq 'False' -and $defaultAddresses -eq $wantAddresses) {
        Write-Info "rule $DefaultRuleName is disabled and narrowed"
    } elseif ($PSCmdlet.ShouldProcess($DefaultRuleName, 'disable and narrow to the web-shop address')) {
        Set-NetFirewallRule -Name $DefaultRuleName -Enabled False -RemoteAddress $WebShopAddress
        Write-Info "disabled rule $DefaultRuleName (it allowed any address)"
    }
}

# Any other enabled rule that names this port and allows any address would undo the above:
# report it, do not touch it. The filters are read once: one CIM call per rule takes minutes.
$portFilters = @{}
foreach ($f in @(Get-NetFirewallPortFilter -All)) { $portFilters[$f.InstanceID] = $f }
$addressFilters = @{}
foreach ($f in @(Get-NetFirewallAddressFilter -All)) { $addressFilters[$f.InstanceID] = $f }
foreach ($rule in @(Get-NetFirewallRule -Direction Inbound -Enabled True -Action Allow)) {
    if ($rule.Name -eq $OurRuleName -or $rule.Name -eq $DefaultRuleName) { continue }
    $pf = $portFilters[$rule.InstanceID]
    $af = $addressFilters[$rule.InstanceID]
    if (-not $pf -or -not $af) { continue }
    if ([string]$pf.Protocol -notin @('TCP', 'Any')) { continue }
    if (@($pf.LocalPort) -notcontains [string]$Port) { continue }
    if (@($af.RemoteAddress) -notcontains 'Any') { continue }
    Write-Warning "firewall rule '$($rule.DisplayName)' ($($rule.Name)) also lets TCP $Port in from any address; disable or narrow it."
}

# ---------------------------------------------------------------------------------------------
# 3. The upload account.
# ---------------------------------------------------------------------------------------------
Write-Step "Account $AccountName"
$user = Get-LocalUser -Name $AccountName -ErrorAction SilentlyContinue
if (-not $user) {
    if ($PSCmdlet.ShouldProcess($AccountName, 'create local account (random password, never shown)')) {
        $password = New-RandomPassword
        try {
            $user = New-LocalUser -Name $AccountName -Password $password -PasswordNeverExpires `
                -UserMayNotChangePassword -AccountNeverExpires `
                -FullName 'plutus-sync upload' `
                -Description 'plutus-sync: SFTP upload from the web shop'
        } finally {
            $password.Dispose()
        }
        Write-Info "created $AccountName (the password is random and was not kept: the account uses its key)"
    }
} else {
    Write-Info "$AccountName exists; its password is left alone"
    if (-not $user.Enabled -and $PSCmdlet.ShouldProcess($AccountName, 'enable')) {
        Enable-LocalUser -Name $AccountName
        Write-Info "enabled $AccountName"
    }
    # An expired password does not stop key logons (Win32-OpenSSH issue 1495), but nobody
    # would ever change it; keep the account as created: out of the expiry policy.
    if ($null -ne $user.PasswordExpires -and $PSCmdlet.ShouldProcess($AccountName, 'set PasswordNeverExpires')) {
        Set-LocalUser -Name $AccountName -PasswordNeverExpires $true
        Write-Info 'password set to never expire'
    }
}

$userSid = $null
if ($user) {
    $userSid = $user.SID
    if (Test-DirectAdministrator $userSid) {
        throw ("$AccountName is a member of Administrators. sshd ignores an administrator's own " +
            'authorized_keys (it reads %ProgramData%\ssh\administrators_authorized_keys instead) and ' +
            'the upload account must not be able to do more than write the inbox. Remove it: ' +
            "Remove-LocalGroupMember -SID S-1-5-32-544 -Member $AccountName, then run this again.")
    }
    Write-Info "$AccountName is not an administrator"

    # The group AllowGroups lets in besides administrators (step 5): the account and nobody else.
    $sftpGroup = Get-LocalGroup -Name $SftpGroupName -ErrorAction SilentlyContinue
    if (-not $sftpGroup -and $PSCmdlet.ShouldProcess($SftpGroupName, 'create local group')) {
        $sftpGroup = New-LocalGroup -Name $SftpGroupName -Description 'plutus-sync: may log in over SFTP'
        Write-Info "created group $SftpGroupName"
    }
    if ($sftpGroup) {
        $inGroup = [bool](@(Get-LocalGroupMember -Group $sftpGroup -ErrorAction SilentlyContinue) | Where-Object { $_.SID -eq $userSid })
        if ($inGroup) {
            Write-Info "$AccountName is in $SftpGroupName"
        } elseif ($PSCmdlet.ShouldProcess($SftpGroupName, "add $AccountName")) {
            Add-LocalGroupMember -Group $sftpGroup -Member $user
            Write-Info "added $AccountName to $SftpGroupName"
        }
    }

    # Newer Win32-OpenSSH builds (not 8.1 on Windows Server 2022) create an "OpenSSH Users"
    # group and may only let its members in. Join it where it exists.
    $sshUsers = Get-LocalGroup -Name 'OpenSSH Users' -ErrorAction SilentlyContinue
    if ($sshUsers) {
        $isMember = [bool](@(Get-LocalGroupMember -Group $sshUsers -ErrorAction SilentlyContinue) | Where-Object { $_.SID -eq $userSid })
        if (-not $isMember -and $PSCmdlet.ShouldProcess("OpenSSH Users", "add $AccountName")) {
            Add-LocalGroupMember -Group $sshUsers -Member $user
            Write-Info "added $AccountName to 'OpenSSH Users'"
        }
    }
}

# ---------------------------------------------------------------------------------------------
# 4. Profile and authorized_keys.
# ---------------------------------------------------------------------------------------------
Write-Step 'Profile and authorized_keys'
$profilePath = $null
if ($userSid) {
    $profilePath = Get-ProfilePath $userSid
    if (-not $profilePath) {
        $plannedPath = Join-Path (Split-Path -Parent $env:PUBLIC) $AccountName
        if (Test-Path -LiteralPath $plannedPath) {
            Write-Warning ("$plannedPath exists but belongs to no profile; Windows will create the profile " +
                'under another name (with the computer name appended). Remove that folder first if it is a leftover.')
        }
        if ($PSCmdlet.ShouldProcess($AccountName, 'create user profile (CreateProfile)')) {
            New-UserProfile -Sid $userSid -Name $AccountName
            $profilePath = Get-ProfilePath $userSid
            Write-Info "created profile $profilePath"
        }
    } else {
        Write-Info "profile is $profilePath"
    }
}

if ($profilePath) {
    $sshDir = Join-Path $profilePath '.ssh'
    $authorizedKeys = Join-Path $sshDir 'authorized_keys'
    if (-not (Test-Path -LiteralPath $sshDir) -and $PSCmdlet.ShouldProcess($sshDir, 'create folder')) {
        $null = New-Item -ItemType Directory -Path $sshDir
    }
    # The folder first, so that the file is never readable by others even for a moment: a new
    # file inherits the folder's rules until its own are set.
    if (Test-Path -LiteralPath $sshDir) {
        $dirRules = @(
            @{ Sid = $SidSystem; Rights = 'FullControl'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'None' },
            @{ Sid = $SidAdmins; Rights = 'FullControl'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'None' },
            @{ Sid = $userSid;   Rights = 'ReadAndExecute'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'None' }
        )
        if (Set-ExactAcl -Path $sshDir -Owner $SidAdmins -Rules $dirRules) { Write-Info "set the ACL of $sshDir" }
    }

    # One line: the key, accepted only from the web shop (from=, the same addresses as the
    # firewall) and without forwarding, agent, X11 or terminal (restrict). The account gets
    # read access only, so it cannot add keys of its own.
    $keyLine = 'from="{0}",restrict {1} {2} {3}' -f ($WebShopAddress -join ','), $keyType, $keyBlob, $keyComment
    $wanted = $keyLine + "`n"
    $current = $null
    if (Test-Path -LiteralPath $authorizedKeys) {
        $current = [System.IO.File]::ReadAllText($authorizedKeys)
    }
    if ($current -ceq $wanted) {
        Write-Info "$authorizedKeys holds the key"
    } elseif ($PSCmdlet.ShouldProcess($authorizedKeys, 'write the key (replaces the file)')) {
        [System.IO.File]::WriteAllText($authorizedKeys, $wanted, $Utf8NoBom)
        Write-Info "wrote $authorizedKeys"
    }
    if (Test-Path -LiteralPath $authorizedKeys) {
        $fileRules = @(
            @{ Sid = $SidSystem; Rights = 'FullControl'; Inherit = 'None'; Propagate = 'None' },
            @{ Sid = $SidAdmins; Rights = 'FullControl'; Inherit = 'None'; Propagate = 'None' },
            @{ Sid = $userSid;   Rights = 'Read';        Inherit = 'None'; Propagate = 'None' }
        )
        if (Set-ExactAcl -Path $authorizedKeys -Owner $SidAdmins -Rules $fileRules) { Write-Info "set the ACL of $authorizedKeys" }
    }
} else {
    Write-Info 'skipped: the account or its profile does not exist yet'
}

# ---------------------------------------------------------------------------------------------
# 5. sshd_config.
# ---------------------------------------------------------------------------------------------
Write-Step "sshd_config ($SshdConfigPath)"
# ChrootDirectory works for sftp-only sessions on Win32-OpenSSH (ForceCommand internal-sftp):
# the account sees the inbox's parent as "/", so the URL's path is /<inbox name>.
# The Administrators group by its SID: its name is translated on non-English Windows, and
# Win32-OpenSSH wants group names in lower case; quoted, as names may hold spaces.
$adminGroup = ($SidAdmins.Translate([System.Security.Principal.NTAccount]).Value -split '\\')[-1].ToLowerInvariant()
$blockValues = @{
    PORT        = $Port
    USER        = $sshUser
    CHROOT      = $ChrootPath
    ALLOWGROUPS = ('"{0}" "{1}"' -f $adminGroup, $SftpGroupName)
}
$globalBlock = Expand-SshdBlock -Template $GlobalBlockTemplate -Values $blockValues
$matchBlock = Expand-SshdBlock -Template $MatchBlockTemplate -Values $blockValues
$configChanged = $false
if (-not (Test-Path -LiteralPath $SshdConfigPath)) {
    Write-Info 'skipped: sshd_config does not exist yet (sshd writes it on its first start)'
} else {
    $oldText = [System.IO.File]::ReadAllText($SshdConfigPath)
    # AllowUsers and AllowGroups must both match when both are set: an AllowUsers line would
    # shut out the upload account, or whoever it names once our AllowGroups is added.
    $allowUsers = @($oldText -split "`r?`n" | Where-Object { $_ -match '^\s*AllowUsers(\s|=)' })
    if ($allowUsers.Count -gt 0) {
        throw ("sshd_config has AllowUsers ($($allowUsers -join '; ')). This script lets in the groups " +
            "'$adminGroup' and '$SftpGroupName' with AllowGroups, and with both keywords a user must match both. " +
            "Put those users into '$SftpGroupName' or Administrators instead, remove the AllowUsers line, then run this again.")
    }
    $newText = Update-SshdConfigText -Text $oldText -GlobalBlock $globalBlock -MatchBlock $matchBlock
    if ($newText -ceq $oldText) {
        Write-Info 'already as wanted'
    } elseif ($PSCmdlet.ShouldProcess($SshdConfigPath, 'back up, then set Port, key-only login, AllowGroups and the Match block (chroot)')) {
        $backup = '{0}.{1}.bak' -f $SshdConfigPath, (Get-Date -Format 'yyyyMMdd-HHmmss')
        # Copy-Item into the same folder keeps the folder's restricted ACL on the copy.
        Copy-Item -LiteralPath $SshdConfigPath -Destination $backup
        Write-Info "backed up to $backup"
        # Written in place so the file keeps its own ACL (sshd refuses a config others may write).
        [System.IO.File]::WriteAllText($SshdConfigPath, $newText, $Utf8NoBom)
        $test = Invoke-Native -FilePath $SshdExe -ArgumentList @('-t', '-f', $SshdConfigPath)
        if ($test.ExitCode -ne 0) {
            Copy-Item -LiteralPath $backup -Destination $SshdConfigPath -Force
            throw "sshd -t rejected the edited sshd_config; the backup was put back.`n$($test.Output)"
        }
        $configChanged = $true
        Write-Info 'updated (sshd -t accepts it)'
    }
}
if ($configChanged -and (Get-Service -Name sshd -ErrorAction SilentlyContinue)) {
    if ($PSCmdlet.ShouldProcess('sshd', 'restart to read the new sshd_config')) {
        Restart-Service -Name sshd
        Write-Info 'sshd restarted'
    }
}

# ---------------------------------------------------------------------------------------------
# 6. The inbox.
# ---------------------------------------------------------------------------------------------
Write-Step "Inbox $InboxPath"
if (-not (Test-Path -LiteralPath $InboxPath)) {
    if ($PSCmdlet.ShouldProcess($InboxPath, 'create folder')) {
        $null = New-Item -ItemType Directory -Path $InboxPath
        Write-Info 'created'
    }
}
if ($userSid -and (Test-Path -LiteralPath $InboxPath)) {
    # The inbox folder itself: list it and create files in it, but not delete or rename it
    # (Modify without Delete). What is inside: Modify, so the account can write <name>.part,
    # read it back, rename it (CreateHardLinkW then delete the old name) and delete it.
    $inboxRules = @(
        @{ Sid = $SidSystem; Rights = 'FullControl'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'None' },
        @{ Sid = $SidAdmins; Rights = 'FullControl'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'None' },
        @{ Sid = $userSid; Rights = 'ReadAndExecute, Write'; Inherit = 'None'; Propagate = 'None' },
        @{ Sid = $userSid; Rights = 'Modify'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'InheritOnly' }
    )
    if ($erpSid) {
        # The ERP reads the files and removes (or moves away) what it imported.
        $inboxRules += @{ Sid = $erpSid; Rights = 'Modify'; Inherit = 'ContainerInherit, ObjectInherit'; Propagate = 'None' }
    }
    # Replacing the ACL drops everyone not listed above: say who, so that an ERP account that
    # had access before is not cut off unnoticed.
    $keepSids = @($SidSystem.Value, $SidAdmins.Value, $userSid.Value)
    if ($erpSid) { $keepSids += $erpSid.Value }
    $dropped = @((Get-Acl -LiteralPath $InboxPath).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]) |
        Where-Object { $keepSids -notcontains $_.IdentityReference.Value } |
        ForEach-Object {
            $sid = $_.IdentityReference
            try { $sid.Translate([System.Security.Principal.NTAccount]).Value } catch { $sid.Value }
        } | Sort-Object -Unique)
    if ($dropped.Count -gt 0) {
        # On a new folder this lists what it inherited from above (Users, Authenticated Users,
        # CREATOR OWNER): expected. On an existing inbox, look for the ERP's account here.
        Write-Warning (("the inbox ACL replaces access for: {0}. If the ERP's import runs as one of these, " -f ($dropped -join ', ')) +
            'run again with -ErpAccount <that account>.')
    }
    if (Set-ExactAcl -Path $InboxPath -Owner $SidAdmins -Rules $inboxRules) {
        Write-Info 'set the inbox ACL'
    } else {
        Write-Info 'the inbox ACL is as wanted'
    }

    # The folder above the inbox (the chroot) usually inherits "Authenticated Users: Modify"
    # from C:\, which would let the upload account write next to the inbox. Report it; that
    # folder is the ERP's.
    $parent = Split-Path -Parent $InboxPath
    $writeBits = [int]([System.Security.AccessControl.FileSystemRights]'WriteData, AppendData, Delete, DeleteSubdirectoriesAndFiles, ChangePermissions, TakeOwnership')
    $openTo = @((Get-Acl -LiteralPath $parent).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]) |
        Where-Object { [string]$_.AccessControlType -eq 'Allow' -and ([int]$_.FileSystemRights -band $writeBits) -ne 0 } |
        Where-Object { $BroadSids.ContainsKey($_.IdentityReference.Value) -or $_.IdentityReference.Value -eq $userSid.Value } |
        ForEach-Object {
            if ($BroadSids.ContainsKey($_.IdentityReference.Value)) { $BroadSids[$_.IdentityReference.Value] } else { $AccountName }
        } | Sort-Object -Unique)
    if ($openTo.Count -gt 0) {
        Write-Warning (("$parent (the account's chroot) grants write access to {0}, so $AccountName can write there too, next to the inbox. " -f ($openTo -join ', ')) +
            'If that folder holds more than the inbox, remove those rights from it or give the inbox a parent of its own.')
    }
} elseif (-not $userSid) {
    Write-Info 'ACL skipped: the account does not exist yet'
}

# ---------------------------------------------------------------------------------------------
# 7. What to give plutus-sync.
# ---------------------------------------------------------------------------------------------
Write-Step 'For plutus-sync on the web-shop server'
if (-not $HostName) {
    # The address this host uses towards the web shop is the one the web shop can reach it on.
    $towards = ($WebShopAddress[0] -split '/', 2)[0]
    try {
        $HostName = (Find-NetRoute -RemoteIPAddress $towards -ErrorAction Stop |
            Where-Object { $_.CimClass.CimClassName -eq 'MSFT_NetIPAddress' } |
            Select-Object -First 1).IPAddress
    } catch {
        $HostName = $null
    }
    if (-not $HostName) { $HostName = $env:COMPUTERNAME }
    Write-Info "host: $HostName (pass -HostName if plutus-sync uses another name for this host)"
}

$urlHost = $HostName
if ($HostName.Contains(':')) { $urlHost = "[$HostName]" }
# The account is chrooted to the inbox's parent: the inbox is /<its name> (not /C:/ERP/inbox).
$urlPath = '/' + [Uri]::EscapeDataString($inboxParts[-1])
$url = 'sftp://{0}@{1}:{2}{3}' -f $AccountName, $urlHost, $Port, $urlPath

$knownHostsLine = $null
$fingerprint = $null
if (Test-Path -LiteralPath $HostKeyPubPath) {
    $hostKey = @((Get-Content -LiteralPath $HostKeyPubPath -TotalCount 1).Trim() -split '\s+')
    # known_hosts writes a host on another port than 22 as [host]:port, and plutus-sync, as
    # OpenSSH, looks the entry up in exactly that form (a plain host entry is for port 22 only).
    $knownHost = $HostName
    if ($Port -ne 22) { $knownHost = "[$HostName]:$Port" }
    $knownHostsLine = '{0} {1} {2}' -f $knownHost, $hostKey[0], $hostKey[1]
    $sha256 = [System.Security.Cryptography.SHA256]::Create()
    try {
        $fingerprint = 'SHA256:' + [Convert]::ToBase64String($sha256.ComputeHash([Convert]::FromBase64String($hostKey[1]))).TrimEnd('=')
    } finally {
        $sha256.Dispose()
    }
    $keygen = Invoke-Native -FilePath $SshKeygenExe -ArgumentList @('-lf', $HostKeyPubPath)

    Write-Info 'Add this line to /etc/plutus-sync/known_hosts (the ed25519 key: the one plutus-sync prefers):'
    Write-Host ''
    Write-Host $knownHostsLine -ForegroundColor Yellow
    Write-Host ''
    Write-Info "Host key fingerprint: $fingerprint"
    if ($keygen.ExitCode -eq 0) { Write-Info "ssh-keygen -lf says:  $($keygen.Output)" }
    Write-Info 'Compare it out of band (phone, ticket), not over the same network, with what the web shop sees:'
    Write-Info '  ssh-keygen -lf /etc/plutus-sync/known_hosts'
} else {
    Write-Info "no host key yet ($HostKeyPubPath appears when sshd first starts); run this again then"
}
Write-Host ''
Write-Info 'In /etc/plutus-sync/config.toml, [destination]:'
Write-Host ''
Write-Host "url = `"$url`"" -ForegroundColor Yellow
Write-Host ''
Write-Info "The path is /$($inboxParts[-1]): $AccountName is chrooted to $ChrootPath and sees it as /."
Write-Info 'The ERP must not import names ending in .part (plutus-sync uploads under that name first).'

[pscustomobject]@{
    Url            = $url
    KnownHostsLine = $knownHostsLine
    Fingerprint    = $fingerprint
}
